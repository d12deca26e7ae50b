//! Outputs on S3: `[output] dir` (and `[paths] reports_dir`) as `s3://bucket/prefix`.
//!
//! A run works on a local mirror of each remote root (under `[paths] s3_cache_dir`, kept
//! between runs so a weekly job downloads only what changed): [`Mirror::open`] brings the
//! mirror up to the store (objects whose ETag or size differ are downloaded, local files the
//! store no longer has are removed), the job runs on the mirror exactly as on a local
//! directory (its own publish-last writes, lock and history included), then
//! [`Mirror::publish`] sends what the run changed:
//!
//! 1. every new or changed file is uploaded under `<prefix>/.staging/<token>/` (nothing a
//!    reader looks at changes while the slow part runs);
//! 2. each is copied server-side into place (a copy replaces one object atomically);
//! 3. files the run removed are deleted;
//! 4. each directory that changed gets `_SUCCESS` last: a JSON document naming every file of
//!    the directory with its ETag;
//! 5. the staging objects are deleted.
//!
//! S3 has no rename and no transaction over several objects: a reader that lists a partition,
//! reads its `_SUCCESS` and reads the files it names with those ETags sees the previous run or
//! the new one, never half; a partition without `_SUCCESS` is being written. Directory-level
//! readers (pyarrow, pandas, polars, Spark) skip `_`-prefixed files. One writer at a time per
//! prefix (the output lock is the mirror's, on this machine). A failed job publishes nothing
//! (a run that wrote its scores and then failed, exit 6, publishes the scores).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::s3::{Client, S3Url};

const MANIFEST: &str = ".fidelis-s3.json";
const MARKER: &str = "_SUCCESS";
const STAGING: &str = ".staging";

/// What the mirror knows of each object (relative key -> ETag and size when last in sync).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    objects: BTreeMap<String, (String, u64)>,
}

/// One remote root and its local copy.
struct Root {
    url: S3Url,
    local: PathBuf,
    manifest: Manifest,
    /// Content hash of every file at the start of the run.
    before: BTreeMap<String, u64>,
}

/// The local mirrors of a run's remote roots (none when every root is local).
pub struct Mirror {
    client: Option<Client>,
    roots: Vec<Root>,
}

/// What [`Mirror::publish`] sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    pub uploaded: usize,
    pub deleted: usize,
    pub markers: Vec<String>,
}

fn out_err(url: &S3Url, message: impl std::fmt::Display) -> Error {
    Error::Output { path: PathBuf::from(url.to_string()), message: message.to_string() }
}

/// The cache directory: `[paths] s3_cache_dir`, else `$XDG_CACHE_HOME/fidelis/s3`, else
/// `~/.cache/fidelis/s3`.
fn cache_root(cfg: &Config) -> PathBuf {
    if !cfg.paths.s3_cache_dir.is_empty() {
        return PathBuf::from(&cfg.paths.s3_cache_dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("fidelis/s3")
}

/// Every file under `dir` but dot-files (locks, temporaries, the manifest) and markers.
fn local_files(dir: &Path) -> Result<Vec<String>> {
    let files = crate::files::relative_files(dir)?;
    Ok(files.into_iter().filter(|r| r.rsplit('/').next() != Some(MARKER)).collect())
}

fn hash_file(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    Some(xxhash_rust::xxh3::xxh3_64(&bytes))
}

fn snapshot(dir: &Path) -> Result<BTreeMap<String, u64>> {
    Ok(local_files(dir)?.into_iter().filter_map(|r| hash_file(&dir.join(&r)).map(|h| (r, h))).collect())
}

fn key_of(url: &S3Url, rel: &str) -> String {
    if url.key.is_empty() {
        rel.to_string()
    } else {
        format!("{}/{rel}", url.key.trim_end_matches('/'))
    }
}

impl Mirror {
    /// Mirror every `s3://` root of `cfg` (`[output] dir`, `[paths] reports_dir`) locally and
    /// return the configuration pointing at the mirrors. Reading the store fails with exit 5.
    pub fn open(cfg: &Config) -> Result<(Config, Mirror)> {
        let mut local_cfg = cfg.clone();
        let mut mirror = Mirror { client: None, roots: Vec::new() };
        let cache = cache_root(cfg);
        for (i, dir) in [cfg.output.dir.clone(), cfg.paths.reports_dir.clone()].into_iter().enumerate() {
            let Some(url) = S3Url::parse(&dir) else { continue };
            let url = url.map_err(|m| Error::config("(config)", "output.dir", m))?;
            let url = S3Url { bucket: url.bucket, key: url.key.trim_end_matches('/').to_string() };
            if mirror.client.is_none() {
                mirror.client = Some(Client::from_env().map_err(|e| out_err(&url, e.message))?);
            }
            let local = cache.join(&url.bucket).join(&url.key);
            let root = mirror.pull(url, local)?;
            let shown = root.local.display().to_string();
            if i == 0 {
                local_cfg.output.dir = shown;
            } else {
                local_cfg.paths.reports_dir = shown;
            }
            mirror.roots.push(root);
        }
        Ok((local_cfg, mirror))
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap_or_else(|| unreachable!("a remote root has a client"))
    }

    /// Bring `local` up to `url`: download what differs, remove what the store lost.
    fn pull(&self, url: S3Url, local: PathBuf) -> Result<Root> {
        std::fs::create_dir_all(&local).map_err(|e| Error::output(&local, e))?;
        let mut manifest: Manifest = std::fs::read(local.join(MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let prefix = if url.key.is_empty() { String::new() } else { format!("{}/", url.key) };
        let listed = self.client().list(&url.bucket, &prefix).map_err(|e| out_err(&url, e))?;
        let mut remote = BTreeMap::new();
        for o in listed {
            let rel = o.key.strip_prefix(&prefix).unwrap_or(&o.key).to_string();
            let hidden = rel.split('/').any(|p| p.starts_with('.')) || rel.rsplit('/').next() == Some(MARKER);
            if !hidden && !rel.is_empty() {
                remote.insert(rel, (o.etag, o.size));
            }
        }
        for (rel, (etag, size)) in &remote {
            let path = local.join(rel);
            let current = manifest.objects.get(rel) == Some(&(etag.clone(), *size))
                && std::fs::metadata(&path).is_ok_and(|m| m.len() == *size);
            if current {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::output(parent, e))?;
            }
            let tmp = path.with_file_name(format!(".download-{}", std::process::id()));
            self.client()
                .get_to_file(&url.with_key(&key_of(&url, rel)), &tmp)
                .map_err(|e| out_err(&url, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::output(&path, e))?;
            manifest.objects.insert(rel.clone(), (etag.clone(), *size));
        }
        for rel in local_files(&local)?.iter().filter(|r| !remote.contains_key(*r)) {
            let _ = std::fs::remove_file(local.join(rel));
            manifest.objects.remove(rel);
        }
        manifest.objects.retain(|k, _| remote.contains_key(k));
        let before = snapshot(&local)?;
        Ok(Root { url, local, manifest, before })
    }

    /// Send what the run changed in every mirror (module docs); nothing when it changed
    /// nothing. Failures are exit 5.
    pub fn publish(mut self) -> Result<Published> {
        let mut done = Published::default();
        let roots = std::mem::take(&mut self.roots);
        for mut root in roots {
            self.publish_root(&mut root, &mut done)?;
        }
        Ok(done)
    }

    fn publish_root(&self, root: &mut Root, done: &mut Published) -> Result<()> {
        let after = snapshot(&root.local)?;
        let changed: Vec<&String> =
            after.iter().filter(|(r, h)| root.before.get(*r) != Some(h)).map(|(r, _)| r).collect();
        let removed: Vec<&String> = root.before.keys().filter(|r| !after.contains_key(*r)).collect();
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let c = self.client();
        let url = &root.url;
        let err = |e: crate::s3::S3Error| out_err(url, e);
        let token = format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"), std::process::id());
        // Objects a killed run left in staging go first.
        let staging_prefix = key_of(url, STAGING);
        for o in c.list(&url.bucket, &format!("{staging_prefix}/")).map_err(err)? {
            c.delete(&url.with_key(&o.key)).map_err(err)?;
        }
        let staged = |rel: &str| url.with_key(&format!("{staging_prefix}/{token}/{rel}"));
        for rel in &changed {
            let path = root.local.join(rel);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            c.put(&staged(rel), &bytes).map_err(err)?;
        }
        for rel in &changed {
            let etag = c.copy(&staged(rel), &url.with_key(&key_of(url, rel))).map_err(err)?;
            let size = std::fs::metadata(root.local.join(rel)).map(|m| m.len()).unwrap_or(0);
            root.manifest.objects.insert((*rel).clone(), (etag, size));
            crate::sink::fault_point("s3-publish");
        }
        for rel in &removed {
            c.delete(&url.with_key(&key_of(url, rel))).map_err(err)?;
            root.manifest.objects.remove(*rel);
        }
        let dirs: std::collections::BTreeSet<String> = changed
            .iter()
            .chain(removed.iter())
            .map(|r| r.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string()))
            .collect();
        for dir in dirs {
            let files: BTreeMap<&str, &str> = root
                .manifest
                .objects
                .iter()
                .filter(|(r, _)| r.rsplit_once('/').map_or("", |(d, _)| d) == dir)
                .map(|(r, (etag, _))| (r.rsplit('/').next().unwrap_or(r), etag.as_str()))
                .collect();
            let marker = if dir.is_empty() { MARKER.to_string() } else { format!("{dir}/{MARKER}") };
            let body = serde_json::json!({"files": files, "published_at": chrono::Utc::now().to_rfc3339(), "run": token});
            c.put(&url.with_key(&key_of(url, &marker)), body.to_string().as_bytes()).map_err(err)?;
            done.markers.push(url.with_key(&key_of(url, &marker)).to_string());
        }
        for rel in &changed {
            c.delete(&staged(rel)).map_err(err)?;
        }
        done.uploaded += changed.len();
        done.deleted += removed.len();
        let manifest = serde_json::to_vec(&root.manifest)
            .map_err(|source| Error::Json { context: "the S3 mirror's manifest".into(), source })?;
        crate::files::write_atomic(&root.local.join(MANIFEST), &manifest)?;
        Ok(())
    }
}
