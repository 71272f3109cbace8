//! Models by hub id or local directory.
//!
//! [`resolve_model`] turns `--model` into a directory holding `config.json`
//! and the safetensors weights (one file, or an index and its shards):
//!
//! 1. an existing path is used as is (it must be a directory);
//! 2. anything else that looks like a repo id (`org/name`) is looked up in
//!    the local hub cache, laid out as `huggingface_hub` writes it:
//!    `<cache>/models--org--name/{refs/<revision>, snapshots/<commit>/…}`;
//! 3. if the snapshot is missing or incomplete, and the hub is not offline,
//!    the files are downloaded into that cache (the `hub` cargo feature,
//!    hf-hub's sync API with a progress bar), then used from there.
//!
//! | setting | option | environment |
//! |---|---|---|
//! | cache | [`HubOptions::cache_dir`] | `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub` |
//! | offline | [`HubOptions::offline`] | `HF_HUB_OFFLINE=1` (also `true`/`yes`/`on`) |
//! | revision | [`HubOptions::revision`] | – (default `main`; a branch, tag or full commit hash) |
//! | token | [`HubOptions::token`] | `HF_TOKEN`, else the token file `HF_HOME/token` |
//! | endpoint | [`HubOptions::endpoint`] | `HF_ENDPOINT` (default `https://huggingface.co`) |
//!
//! A cached snapshot is used without asking the hub whether the branch has
//! moved: pin `revision` to a commit for reproducible runs, or remove the
//! snapshot to refresh it.

use std::path::{Path, PathBuf};

use vitrine_core::{Error, Result};

use crate::checkpoint::{INDEX_FILE, SINGLE_FILE};

/// The model config every layout has.
pub const CONFIG_FILE: &str = "config.json";

/// Where and how to fetch hub models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Access token for gated or private repos.
    pub token: Option<String>,
    /// Hub cache directory (the folder that holds `models--…`).
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network: use the cache or fail.
    pub offline: bool,
    /// Show a download progress bar (on a terminal).
    pub progress: bool,
    /// Hub URL (default `https://huggingface.co`; `HF_ENDPOINT` for mirrors).
    pub endpoint: Option<String>,
}

impl HubOptions {
    /// Options from the process environment (see the module docs).
    pub fn from_env() -> Self {
        Self::from_env_with(|k| std::env::var(k).ok())
    }

    /// Options from an environment given as a lookup function (testable
    /// without touching the process environment).
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Self {
        let nonempty = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let hf_home = nonempty("HF_HOME").map(PathBuf::from).or_else(|| {
            nonempty("XDG_CACHE_HOME")
                .map(|x| PathBuf::from(x).join("huggingface"))
                .or_else(|| {
                    nonempty("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
                })
        });
        let cache_dir = nonempty("HF_HUB_CACHE")
            .or_else(|| nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")));
        let offline = nonempty("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let token = nonempty("HF_TOKEN")
            .or_else(|| nonempty("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let file = nonempty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
                let t = std::fs::read_to_string(file).ok()?;
                let t = t.trim();
                (!t.is_empty()).then(|| t.to_string())
            });
        Self {
            revision: None,
            token: token.map(|t| t.trim().to_string()),
            cache_dir,
            offline,
            progress: true,
            endpoint: nonempty("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_string()),
        }
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    fn cache(&self) -> Result<&Path> {
        self.cache_dir.as_deref().ok_or_else(|| {
            Error::InvalidArgument(
                "no hub cache directory: set HF_HUB_CACHE or HF_HOME (or HOME)".into(),
            )
        })
    }
}

/// Where a model came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory given by path.
    Local,
    /// A hub snapshot.
    Hub {
        /// `org/name`.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The snapshot's commit.
        commit: String,
        /// Whether anything was downloaded.
        downloaded: bool,
    },
}

/// A model directory ready for [`crate::Encoder::from_dir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    /// Directory with `config.json` and the weights.
    pub dir: PathBuf,
    /// Where it came from.
    pub source: ModelSource,
}

/// Whether `s` has the shape of a hub repo id (`name` or `org/name`).
pub fn is_repo_id(s: &str) -> bool {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with(['.', '-'])
            && !p.ends_with('.')
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let parts: Vec<&str> = s.split('/').collect();
    matches!(parts.len(), 1 | 2) && parts.iter().all(|p| ok_part(p))
}

/// The cache folder of a model repo: `models--org--name`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// Resolves a hub id or local directory (see the module docs).
pub fn resolve_model(id_or_dir: &str, opts: &HubOptions) -> Result<ResolvedModel> {
    let path = Path::new(id_or_dir);
    if path.exists() {
        if !path.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "--model {id_or_dir} is a file; give the model directory (with config.json) or a hub id"
            )));
        }
        return Ok(ResolvedModel {
            dir: path.to_path_buf(),
            source: ModelSource::Local,
        });
    }
    if !is_repo_id(id_or_dir) {
        return Err(Error::InvalidArgument(format!(
            "{id_or_dir}: no such model directory (and not a hub id like `org/name`)"
        )));
    }
    let cache = opts.cache()?;
    let revision = opts.revision().to_string();
    match find_in_cache(cache, id_or_dir, &revision) {
        Ok((dir, commit)) => Ok(ResolvedModel {
            dir,
            source: ModelSource::Hub {
                repo: id_or_dir.to_string(),
                revision,
                commit,
                downloaded: false,
            },
        }),
        Err(why) if opts.offline => Err(Error::InvalidArgument(format!(
            "{id_or_dir}@{revision} is not usable from the hub cache {} and the hub is offline (HF_HUB_OFFLINE): {why}",
            cache.display()
        ))),
        Err(why) => download(id_or_dir, &revision, cache, opts, &why),
    }
}

/// The snapshot directory of `repo` at `revision` in `cache`, and its commit,
/// if it holds a config and complete weights; otherwise why not.
pub fn find_in_cache(
    cache: &Path,
    repo: &str,
    revision: &str,
) -> std::result::Result<(PathBuf, String), String> {
    let root = cache.join(repo_folder(repo));
    if !root.is_dir() {
        return Err(format!("{} does not exist", root.display()));
    }
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        // A branch or tag names a file under refs/ (`main`, `refs/pr/1`);
        // nothing that could lead outside it.
        let inside = std::path::Path::new(revision)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if revision.is_empty() || !inside || revision.contains('\\') {
            return Err(format!("bad revision `{revision}`"));
        }
        let r = root.join("refs").join(revision);
        std::fs::read_to_string(&r)
            .map_err(|e| format!("cannot read {}: {e}", r.display()))?
            .trim()
            .to_string()
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit.starts_with('.') {
        return Err(format!("bad commit `{commit}` for revision {revision}"));
    }
    let dir = root.join("snapshots").join(&commit);
    if !dir.is_dir() {
        return Err(format!("{} does not exist", dir.display()));
    }
    let missing = missing_files(&dir);
    if !missing.is_empty() {
        return Err(format!(
            "snapshot {} lacks {}",
            dir.display(),
            missing.join(", ")
        ));
    }
    Ok((dir, commit))
}

/// Files a model directory needs but lacks: the config, and the weights
/// (`model.safetensors`, or the index and every shard it names).
pub fn missing_files(dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    if !dir.join(CONFIG_FILE).is_file() {
        missing.push(CONFIG_FILE.to_string());
    }
    if dir.join(SINGLE_FILE).is_file() {
        return missing;
    }
    match shard_names(&dir.join(INDEX_FILE)) {
        Ok(shards) => missing.extend(shards.into_iter().filter(|s| !dir.join(s).is_file())),
        Err(_) => missing.push(format!("{SINGLE_FILE} (or {INDEX_FILE})")),
    }
    missing
}

/// The shard files a safetensors index names, sorted and deduplicated.
fn shard_names(index: &Path) -> std::result::Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no weight_map")?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str())
        // Shards live next to the index: no paths out of the snapshot.
        .filter(|f| !f.contains(['/', '\\']) && !f.starts_with('.'))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(feature = "hub")]
fn download(
    repo: &str,
    revision: &str,
    cache: &Path,
    opts: &HubOptions,
    why: &str,
) -> Result<ResolvedModel> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};

    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!(
            "downloading {what} of {repo}@{revision} into {}: {e} (not in the cache: {why})",
            cache.display()
        ))
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_token(opts.token.clone())
        .with_progress(opts.progress);
    if let Some(endpoint) = &opts.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(|e| fail("files", &e))?;
    let handle = api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let config = handle
        .download(CONFIG_FILE)
        .map_err(|e| fail(CONFIG_FILE, &e))?;
    let dir = config
        .parent()
        .ok_or_else(|| fail(CONFIG_FILE, &"no parent directory"))?
        .to_path_buf();
    match handle.download(INDEX_FILE) {
        Ok(index) => {
            let shards = shard_names(&index).map_err(|e| fail(INDEX_FILE, &e))?;
            for s in shards {
                handle.download(&s).map_err(|e| fail(&s, &e))?;
            }
        }
        Err(_) => {
            handle
                .download(SINGLE_FILE)
                .map_err(|e| fail(SINGLE_FILE, &e))?;
        }
    }
    let missing = missing_files(&dir);
    if !missing.is_empty() {
        return Err(fail(
            "files",
            &format!("still missing {}", missing.join(", ")),
        ));
    }
    let commit = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ResolvedModel {
        dir,
        source: ModelSource::Hub {
            repo: repo.to_string(),
            revision: revision.to_string(),
            commit,
            downloaded: true,
        },
    })
}

#[cfg(not(feature = "hub"))]
fn download(
    repo: &str,
    revision: &str,
    cache: &Path,
    _opts: &HubOptions,
    why: &str,
) -> Result<ResolvedModel> {
    Err(Error::InvalidArgument(format!(
        "{repo}@{revision} is not in the hub cache {} ({why}), and this build cannot download \
         (rebuild vitrine with the `hub` feature)",
        cache.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        for ok in [
            "nvidia/C-RADIOv4-H",
            "OpenGVLab/InternViT-300M-448px-V2_5",
            "gpt2",
        ] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "/abs/path",
            "./rel",
            "a/b/c",
            "../x",
            "org/",
            "org/na me",
            "",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
        assert_eq!(
            repo_folder("nvidia/C-RADIOv4-H"),
            "models--nvidia--C-RADIOv4-H"
        );
    }

    #[test]
    fn environment_is_read_like_huggingface_hub() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = HubOptions::from_env_with(env(&[("HOME", "/home/u")]));
        assert_eq!(
            o.cache_dir,
            Some(PathBuf::from("/home/u/.cache/huggingface/hub"))
        );
        assert!(!o.offline);
        let o = HubOptions::from_env_with(env(&[("HF_HOME", "/data/hf"), ("HF_HUB_OFFLINE", "1")]));
        assert_eq!(o.cache_dir, Some(PathBuf::from("/data/hf/hub")));
        assert!(o.offline);
        let o = HubOptions::from_env_with(env(&[
            ("HF_HOME", "/data/hf"),
            ("HF_HUB_CACHE", "/fast/cache"),
            ("HF_HUB_OFFLINE", "0"),
            ("HF_TOKEN", "hf_abc\n"),
        ]));
        assert_eq!(o.cache_dir, Some(PathBuf::from("/fast/cache")));
        assert!(!o.offline);
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
    }
}
