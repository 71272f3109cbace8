//! Tensor files in and out: safetensors with named fp32 tensors.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use vitrine_core::{Error, HostData, HostTensor, Result};

use crate::checkpoint::Checkpoint;

/// Reads tensor `name` from a safetensors file (any float dtype).
pub fn read_tensor(path: &Path, name: &str) -> Result<HostTensor> {
    let file = Checkpoint::from_files(&[path.to_path_buf()])?;
    file.tensor(name)?.ok_or_else(|| {
        let names = file.names().join(", ");
        Error::InvalidArgument(format!(
            "{} has no tensor `{name}` (it has: {names})",
            path.display()
        ))
    })
}

fn bytes_of(t: &HostTensor) -> (Dtype, Vec<u8>) {
    match t.data() {
        HostData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        HostData::F16(v) => (Dtype::F16, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        HostData::BF16(v) => (
            Dtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    }
}

/// Writes named tensors (and string metadata) to a safetensors file. The file
/// is written to a temporary name first and renamed, so a failure never
/// leaves a truncated output behind.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, HostTensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let (dtype, bytes) = bytes_of(t);
            (n.clone(), dtype, t.shape().to_vec(), bytes)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(n, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::InvalidArgument(format!("tensor `{n}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata)
    };
    let data = safetensors::serialize(views, meta)
        .map_err(|e| Error::InvalidArgument(format!("serialising: {e}")))?;
    let tmp = path.with_extension("safetensors.partial");
    let io = |p: &Path, e| Error::Io {
        path: p.to_path_buf(),
        source: e,
    };
    std::fs::write(&tmp, data).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Stacks equally shaped tensors along a new leading axis (a batch).
pub fn stack(items: &[&HostTensor]) -> Result<HostTensor> {
    let first = items
        .first()
        .ok_or_else(|| Error::InvalidArgument("nothing to stack".into()))?;
    if let Some(odd) = items.iter().find(|t| t.shape() != first.shape()) {
        return Err(Error::shape(
            "stack",
            format!("{:?} vs {:?}", first.shape(), odd.shape()),
        ));
    }
    let mut shape = vec![items.len()];
    shape.extend_from_slice(first.shape());
    let values: Vec<f32> = items.iter().flat_map(|t| t.to_f32_vec()).collect();
    HostTensor::from_f32(shape, values)
}
