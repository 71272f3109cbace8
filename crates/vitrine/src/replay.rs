//! Small batches as recorded passes (CUDA graphs).
//!
//! At batch 1 a forward pass is ~260 short kernels, and queuing them one by
//! one costs the host more time than the device needs to run them (RADIO-H
//! at 224² on an H100: 2.9 ms to queue a pass, against about 1.5 ms of
//! device work). A backend that can record device work
//! ([`Backend::record`]) captures one pass per input shape and replays it
//! with a single launch afterwards.
//!
//! Policy, per (input shapes, kept intermediates):
//! - first pass: run as usual, which also lets the GEMMs pick their
//!   algorithms (timing needs synchronisation, which a recording cannot hold);
//! - second pass: recorded, then run from the recording;
//! - later passes: new pixels are copied into the recorded input buffers and
//!   the recording is replayed; the outputs land in the same buffers.
//!
//! Only batches of up to [`MAX_PIXELS`] pixels are recorded (a recording
//! keeps its activations' memory reserved), and at most [`MAX_RECORDINGS`]
//! shapes; others always run as usual. A recording that fails (a backend op
//! that cannot be recorded) marks its shape as plain for good, and that pass
//! runs as usual. Replays give bit-identical results to plain passes: the
//! same kernels on the same data.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use vitrine_core::{Backend, DType, Error, HostTensor, Replay, Result};

use crate::models::{ImageOutputs, Model};

/// Largest batch, in pixels, that is recorded: 4096 patches of 16² (about
/// 20 images at 224²).
pub(crate) const MAX_PIXELS: usize = 4096 * 16 * 16;
/// Most shapes recorded at once.
pub(crate) const MAX_RECORDINGS: usize = 8;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    shapes: Vec<Vec<usize>>,
    keep: Vec<usize>,
}

enum Entry<B: Backend> {
    /// Ran once as usual.
    Seen,
    Ready(Recorded<B>),
    /// Not recordable here: always run as usual (with the reason, when
    /// recording failed rather than being unsupported).
    Plain(Option<String>),
}

/// A recorded pass with the buffers it reads and writes. Field order is drop
/// order: the recording goes before the outputs it allocated.
struct Recorded<B: Backend> {
    replay: Box<dyn Replay>,
    inputs: Vec<B::Tensor>,
    outputs: Vec<ImageOutputs<B>>,
}

/// Recorded passes of one loaded model.
pub(crate) struct Recorder<B: Backend> {
    entries: Mutex<HashMap<Key, Entry<B>>>,
}

/// How a prepared pass will run.
enum Mode<B: Backend> {
    Plain(Vec<B::Tensor>),
    Record(Vec<B::Tensor>),
    Replay,
}

/// A batch whose pixels are on the device, ready to run one or more times.
/// Holds the recorder's lock: recorded buffers are shared by every replay.
pub(crate) struct Prepared<'a, B: Backend> {
    be: &'a B,
    model: &'a Model<B>,
    keep: Vec<usize>,
    entries: MutexGuard<'a, HashMap<Key, Entry<B>>>,
    key: Key,
    mode: Mode<B>,
}

fn clone_outputs<B: Backend>(outputs: &[ImageOutputs<B>]) -> Vec<ImageOutputs<B>> {
    outputs
        .iter()
        .map(|o| ImageOutputs {
            last_hidden_state: o.last_hidden_state.clone(),
            summary: o.summary.clone(),
            features: o.features.clone(),
            intermediates: o.intermediates.clone(),
            grid: o.grid,
        })
        .collect()
}

impl<B: Backend> Recorder<B> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Puts `groups` (pixels, converted to `dtype`) on the device, for
    /// [`Prepared::run`].
    pub(crate) fn prepare<'a>(
        &'a self,
        be: &'a B,
        model: &'a Model<B>,
        dtype: DType,
        groups: &[HostTensor],
        keep: &[usize],
    ) -> Result<Prepared<'a, B>> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| Error::Backend("recorded passes poisoned".into()))?;
        let key = Key {
            shapes: groups.iter().map(|g| g.shape().to_vec()).collect(),
            keep: keep.to_vec(),
        };
        let pixels: usize = groups.iter().map(pixels_of).sum();
        let upload =
            || -> Result<Vec<B::Tensor>> { groups.iter().map(|g| be.upload(g, dtype)).collect() };
        let recorded = entries
            .values()
            .filter(|e| matches!(e, Entry::Ready(_)))
            .count();
        let mode = match entries.get(&key) {
            _ if pixels > MAX_PIXELS => Mode::Plain(upload()?),
            None => {
                entries.insert(key.clone(), Entry::Seen);
                Mode::Plain(upload()?)
            }
            Some(Entry::Seen) if recorded < MAX_RECORDINGS => Mode::Record(upload()?),
            Some(Entry::Ready(r)) => {
                for (dst, src) in r.inputs.iter().zip(groups) {
                    be.upload_into(dst, src)?;
                }
                Mode::Replay
            }
            Some(_) => Mode::Plain(upload()?),
        };
        Ok(Prepared {
            be,
            model,
            keep: keep.to_vec(),
            entries,
            key,
            mode,
        })
    }
}

/// Pixels per channel in a group `[n, 3, h, w]`.
fn pixels_of(g: &HostTensor) -> usize {
    match g.shape() {
        [n, _, h, w] => n * h * w,
        _ => usize::MAX,
    }
}

impl<B: Backend> Prepared<'_, B> {
    /// Queues one forward pass; outputs stay on the device.
    pub(crate) fn run(&mut self) -> Result<Vec<ImageOutputs<B>>> {
        // Plain and replayed passes leave the mode as it is (also on error);
        // only a recording moves it on.
        match &self.mode {
            Mode::Plain(inputs) => return self.model.forward(self.be, inputs, &self.keep),
            Mode::Replay => {
                let Some(Entry::Ready(r)) = self.entries.get(&self.key) else {
                    return Err(Error::Backend("recorded pass vanished".into()));
                };
                r.replay.replay()?;
                return Ok(clone_outputs(&r.outputs));
            }
            Mode::Record(_) => {}
        }
        let Mode::Record(inputs) = std::mem::replace(&mut self.mode, Mode::Plain(Vec::new()))
        else {
            return Err(Error::Backend("pass mode changed".into()));
        };
        let mut outputs = None;
        let (model, be, keep) = (self.model, self.be, &self.keep);
        let recorded = be.record(&mut || {
            outputs = Some(model.forward(be, &inputs, keep)?);
            Ok(())
        });
        match (recorded, outputs) {
            (Ok(Some(replay)), Some(outputs)) => {
                let out = clone_outputs(&outputs);
                self.entries.insert(
                    self.key.clone(),
                    Entry::Ready(Recorded {
                        replay,
                        inputs,
                        outputs,
                    }),
                );
                self.mode = Mode::Replay;
                Ok(out)
            }
            // The backend records nothing: `pass` ran as usual.
            (Ok(None), Some(outputs)) => {
                self.entries.insert(self.key.clone(), Entry::Plain(None));
                self.mode = Mode::Plain(inputs);
                Ok(outputs)
            }
            // Recording failed before anything ran: run as usual.
            (recorded, _) => {
                let why = match recorded {
                    Err(e) => e.to_string(),
                    Ok(_) => "the recorded pass produced no outputs".into(),
                };
                self.entries
                    .insert(self.key.clone(), Entry::Plain(Some(why)));
                let out = self.model.forward(self.be, &inputs, &self.keep);
                self.mode = Mode::Plain(inputs);
                out
            }
        }
    }

    /// Whether the last [`Prepared::run`] ran from a recording.
    pub(crate) fn replays(&self) -> bool {
        matches!(self.mode, Mode::Replay)
    }

    /// Why this shape runs without a recording, if recording it failed.
    pub(crate) fn record_failure(&self) -> Option<String> {
        match self.entries.get(&self.key) {
            Some(Entry::Plain(why)) => why.clone(),
            _ => None,
        }
    }
}
