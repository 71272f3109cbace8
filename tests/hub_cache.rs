//! Loading by hub id from a hub cache laid out on disk, offline (there is no
//! network in the tests): every fixture model, both checkpoint layouts,
//! single-file and sharded, by branch, tag and commit; incomplete snapshots
//! and missing repos fail with messages that say what is missing.

use std::path::{Path, PathBuf};

use vitrine::hub::{find_in_cache, resolve_model, ModelSource};
use vitrine::{DType, Device, Encoder, HostTensor, HubOptions};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vitrine-hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Lays `model_dir` out as huggingface_hub does: blobs named by content,
/// snapshot entries that link to them, and `refs/<branch>` holding the commit.
fn lay_out(cache: &Path, repo: &str, model_dir: &Path, commit: &str, refs: &[&str]) -> PathBuf {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    for entry in std::fs::read_dir(model_dir).unwrap() {
        let src = entry.unwrap().path();
        let name = src.file_name().unwrap().to_owned();
        let bytes = std::fs::read(&src).unwrap();
        let blob = root.join("blobs").join(format!("{:016x}", fnv(&bytes)));
        std::fs::write(&blob, &bytes).unwrap();
        link(&blob, &snap.join(&name));
    }
    for r in refs {
        // huggingface_hub writes the bare hash; tolerate a trailing newline too.
        std::fs::write(root.join("refs").join(r), format!("{commit}\n")).unwrap();
    }
    snap
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

#[cfg(not(unix))]
fn link(target: &Path, at: &Path) {
    std::fs::copy(target, at).unwrap();
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: true,
        progress: false,
        ..Default::default()
    }
}

fn pixels(size: usize) -> HostTensor {
    let n = 3 * size * size;
    let v = (0..n).map(|i| ((i * 37) % 101) as f32 / 100.0).collect();
    HostTensor::from_f32(vec![1, 3, size, size], v).unwrap()
}

#[test]
fn every_fixture_layout_loads_from_the_cache_offline() {
    let cache = temp("layouts");
    // radio_v2: native sharded; internvit_6b_hub: hub layout sharded; the rest single files.
    for (dir, size) in [
        ("radio_v4", 16),
        ("radio_v4_hub", 16),
        ("radio_v2", 16),
        ("radio_v2_hub", 16),
        ("internvit_300m", 32),
        ("internvit_300m_hub", 32),
        ("internvit_6b", 24),
        ("internvit_6b_hub", 24),
    ] {
        let repo = format!("test-org/{}", dir.replace('_', "-"));
        lay_out(&cache, &repo, &fixtures().join(dir), COMMIT, &["main"]);
        let hub = Encoder::from_pretrained_with(&repo, Device::Cpu, DType::F32, &offline(&cache))
            .unwrap_or_else(|e| panic!("{repo}: {e}"));
        match hub.source() {
            ModelSource::Hub {
                commit, downloaded, ..
            } => {
                assert_eq!(commit, COMMIT);
                assert!(!downloaded);
            }
            other => panic!("{repo}: {other:?}"),
        }
        let local = Encoder::from_dir(&fixtures().join(dir), Device::Cpu, DType::F32).unwrap();
        let px = pixels(size);
        let (a, b) = (
            hub.forward_pixels(&px).unwrap(),
            local.forward_pixels(&px).unwrap(),
        );
        assert_eq!(a, b, "{repo}: same weights, same outputs");
    }
}

#[test]
fn revisions_resolve_by_branch_tag_and_commit() {
    let cache = temp("revisions");
    let other = "fedcba9876543210fedcba9876543210fedcba98";
    lay_out(
        &cache,
        "org/radio",
        &fixtures().join("radio_v4"),
        COMMIT,
        &["main"],
    );
    lay_out(
        &cache,
        "org/radio",
        &fixtures().join("radio_v4"),
        other,
        &["v1.0"],
    );
    let at = |rev: Option<&str>| {
        let mut o = offline(&cache);
        o.revision = rev.map(str::to_string);
        resolve_model("org/radio", &o)
    };
    let commit_of = |r: vitrine::Result<vitrine::hub::ResolvedModel>| match r.unwrap().source {
        ModelSource::Hub { commit, .. } => commit,
        other => panic!("{other:?}"),
    };
    assert_eq!(commit_of(at(None)), COMMIT);
    assert_eq!(commit_of(at(Some("main"))), COMMIT);
    assert_eq!(commit_of(at(Some("v1.0"))), other);
    assert_eq!(commit_of(at(Some(other))), other, "a commit needs no ref");
    let err = at(Some("nope")).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("offline"), "{err}");
    // A revision is a file under refs/, never a path out of it: a file
    // planted beside the cache is not read.
    std::fs::write(cache.join("planted"), COMMIT).unwrap();
    for bad in ["../../planted", "/etc/hostname", "a/../../../planted"] {
        let err = at(Some(bad)).unwrap_err().to_string();
        assert!(err.contains("bad revision"), "{bad}: {err}");
    }
}

#[test]
fn incomplete_snapshots_and_missing_repos_fail_clearly() {
    let cache = temp("incomplete");
    let snap = lay_out(
        &cache,
        "org/sharded",
        &fixtures().join("internvit_6b_hub"),
        COMMIT,
        &["main"],
    );
    std::fs::remove_file(snap.join("model-00002-of-00002.safetensors")).unwrap();
    let err = resolve_model("org/sharded", &offline(&cache))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
    let why = find_in_cache(&cache, "org/sharded", "main").unwrap_err();
    assert!(why.contains("lacks"), "{why}");

    let snap = lay_out(
        &cache,
        "org/noweights",
        &fixtures().join("radio_v4"),
        COMMIT,
        &["main"],
    );
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let err = resolve_model("org/noweights", &offline(&cache))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    let err =
        Encoder::from_pretrained_with("org/absent", Device::Cpu, DType::F32, &offline(&cache))
            .err()
            .expect("absent repo fails")
            .to_string();
    assert!(
        err.contains("org/absent") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    // A local path wins over the cache; a path that does not exist is not a repo id.
    let local = resolve_model(
        fixtures().join("radio_v4").to_str().unwrap(),
        &offline(&cache),
    )
    .unwrap();
    assert_eq!(local.source, ModelSource::Local);
    let err = resolve_model("/nonexistent/model", &offline(&cache))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/model"), "{err}");
}

/// A minimal hub on the loopback interface: serves `files` of one repo at one
/// commit the way the hub's `resolve` endpoint does (commit and etag headers,
/// byte ranges), 404 for anything else. It answers at most `max` connections.
fn mock_hub(repo: &str, commit: &str, files: Vec<(String, Vec<u8>)>, max: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let prefix = format!("/{repo}/resolve/main/");
    let commit = commit.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut range_start = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(r) = lower.strip_prefix("range: bytes=") {
                    range_start = r
                        .split('-')
                        .next()
                        .unwrap_or("0")
                        .trim()
                        .parse()
                        .unwrap_or(0);
                }
            }
            let file = path
                .strip_prefix(&prefix)
                .and_then(|name| files.iter().find(|(n, _)| n == name));
            let response = match file {
                Some((name, bytes)) => {
                    let end = bytes.len().saturating_sub(1);
                    let body = &bytes[range_start.min(bytes.len())..];
                    let mut head = format!(
                        "HTTP/1.1 206 Partial Content\r\nx-repo-commit: {commit}\r\netag: \"{:016x}-{name}\"\r\n\
                         content-range: bytes {range_start}-{end}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        fnv(bytes),
                        bytes.len(),
                        body.len()
                    )
                    .into_bytes();
                    head.extend_from_slice(body);
                    head
                }
                None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}")
}

#[test]
fn missing_models_are_downloaded_into_the_cache_then_used_offline() {
    for (dir, repo) in [
        ("radio_v4", "org/single"),
        ("internvit_6b_hub", "org/sharded"),
    ] {
        let cache = temp(&format!("download-{}", dir));
        let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixtures().join(dir))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        let endpoint = mock_hub(repo, COMMIT, files, 64);
        let online = HubOptions {
            cache_dir: Some(cache.clone()),
            endpoint: Some(endpoint),
            ..Default::default()
        };
        let got = resolve_model(repo, &online).unwrap_or_else(|e| panic!("{repo}: {e}"));
        assert!(
            matches!(&got.source, ModelSource::Hub { downloaded: true, commit, .. } if commit == COMMIT),
            "{:?}",
            got.source
        );
        // The cache now has the huggingface_hub layout: the second time needs no network.
        let again = resolve_model(repo, &offline(&cache)).unwrap();
        assert_eq!(again.dir, got.dir);
        let hub = Encoder::from_dir(&again.dir, Device::Cpu, DType::F32).unwrap();
        let local = Encoder::from_dir(&fixtures().join(dir), Device::Cpu, DType::F32).unwrap();
        let px = pixels(16);
        assert_eq!(
            hub.forward_pixels(&px).unwrap(),
            local.forward_pixels(&px).unwrap()
        );
    }
}
