//! `COPY ... TO` a local path (and `INSERT INTO` a Parquet view), written atomically:
//! under a temporary sibling name, moved into place only once the whole write succeeded.
//!
//! A write goes through three sibling names of its target `dir/name`, each carrying the
//! writer's process id and a counter:
//!
//! - `.hindcast-tmp-<pid>-<n>-name`: being written; incomplete until renamed;
//! - `.hindcast-commit-<pid>-<n>-name` (or `.hindcast-replace-...`, replacing the target
//!   as a whole): complete, being moved into place;
//! - `.hindcast-old-<pid>-<n>-name`: the target it replaces, moved aside, removed once
//!   the new one is in.
//!
//! Each step is one rename, so a process killed at any point leaves the target as it was
//! or as it is meant to be, plus siblings that say how far it got. The next write to the
//! same target finishes what a dead writer started (`recover`): an incomplete write is
//! removed, a complete one is moved into place, an old copy is removed (or put back if
//! the target is missing). Readers list the target itself, never its siblings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

const TEMP: &str = ".hindcast-tmp-";
const COMMIT: &str = ".hindcast-commit-";
const REPLACE: &str = ".hindcast-replace-";
const OLD: &str = ".hindcast-old-";

/// Where a test asks a write to stop: at a point named `point` when `HINDCAST_CRASH_POINT`
/// names it, the process says so on stderr and sleeps, for the test to kill it there
/// (`tests/crashes.rs`). Costs one environment lookup per write step.
#[doc(hidden)]
pub fn crash_point(point: &str) {
    if std::env::var("HINDCAST_CRASH_POINT").is_ok_and(|p| p == point) {
        eprintln!("hindcast: at crash point {point}");
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// A `COPY ... TO` target written under a temporary sibling name and moved into place only
/// once the whole write succeeded, so a failed, cancelled or killed write leaves no
/// partial dataset. Object-store targets are [`RemoteOutput`]'s.
pub(super) struct TempOutput {
    /// `.hindcast-tmp-<pid>-<n>-<name>`, a sibling of `target`.
    temp: PathBuf,
    target: PathBuf,
    /// Whether the target was written as a directory (`'out/'`).
    is_dir: bool,
    /// Whether the commit replaces the target directory instead of adding to it.
    replace: bool,
    committed: bool,
}

impl TempOutput {
    /// The write of `target`, after finishing what dead writers left there (`recover`).
    pub fn for_target(target: &str) -> Option<Self> {
        let local = target.strip_prefix("file://").unwrap_or(target);
        if local.contains("://") {
            return None;
        }
        let target = PathBuf::from(local.trim_end_matches('/'));
        target.file_name()?;
        recover(&target);
        let temp = sibling(&target, TEMP);
        Some(Self {
            temp,
            target,
            is_dir: local.ends_with('/'),
            replace: false,
            committed: false,
        })
    }

    /// The path for DataFusion to write: same extension and trailing slash as the target,
    /// so it picks the same format and layout.
    pub fn temp_target(&self) -> String {
        let mut path = self.temp.to_string_lossy().into_owned();
        if self.is_dir {
            path.push('/');
        }
        path
    }

    /// The temporary directory (or file) written in place of the target.
    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    /// Whether the target already exists and is not an empty directory.
    pub fn target_has_files(&self) -> bool {
        match std::fs::read_dir(&self.target) {
            Ok(mut entries) => entries.next().is_some(),
            Err(_) => self.target.exists(),
        }
    }

    /// The target directory, if it exists.
    pub fn target_dir(&self) -> Option<&Path> {
        self.target.is_dir().then_some(self.target.as_path())
    }

    /// Commit by replacing the target directory as a whole (a training set written again),
    /// not by adding files to it.
    pub fn replace_target(&mut self) {
        self.replace = true;
    }

    /// Move the write into place. `wrote_rows`: whether DataFusion reported rows written,
    /// so a temporary output that is missing is an error, not an empty result.
    pub fn commit(mut self, wrote_rows: bool) -> Result<()> {
        if !self.temp.exists() {
            self.committed = true;
            if wrote_rows {
                // `recover` in a process that cannot see this one (another host or PID
                // namespace on a shared file system) took it for a dead writer's.
                return Err(DataFusionError::Execution(format!(
                    "COPY wrote its rows to {} but they are gone: another process removed them; write again",
                    self.temp.display()
                )));
            }
            // Nothing was written (e.g. an empty result into a directory).
            return Ok(());
        }
        crash_point("written");
        // From here the write is complete: a dead writer's `.hindcast-commit-` is moved
        // into place by the next write, not removed.
        let kind = if self.replace { REPLACE } else { COMMIT };
        let complete = self.temp.with_file_name(format!(
            "{kind}{}",
            &self.temp.file_name().unwrap_or_default().to_string_lossy()[TEMP.len()..]
        ));
        let moved = std::fs::rename(&self.temp, &complete).and_then(|()| {
            self.committed = true;
            crash_point("complete");
            put_in_place(&complete, &self.target, self.replace)
        });
        // A failure leaves the complete write where it is, as a kill would: a merge that
        // stopped halfway is then finished by the next write, not left half done.
        moved.map_err(|e| {
            DataFusionError::from(e).context(format!(
                "COPY wrote {} but could not move it to {}; it is kept there, and the next write to {} from another process moves it in",
                complete.display(),
                self.target.display(),
                self.target.display()
            ))
        })
    }
}

/// `dir/<kind><pid>-<n>-<name>` for the target `dir/name`.
fn sibling(target: &Path, kind: &str) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!("{}{name}", unique_prefix(kind)))
}

/// `<kind><pid>-<n>-`, a different `n` each time.
fn unique_prefix(kind: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{kind}{}-{n}-", std::process::id())
}

/// Move the complete write `from` into place at `target`: renamed there, or its files added
/// to the directory there, or (`replace`) in the place of that directory.
fn put_in_place(from: &Path, target: &Path, replace: bool) -> std::io::Result<()> {
    if replace && target.is_dir() {
        replace_dir(from, target)
    } else if target.is_dir() {
        merge_into(from, target)
    } else {
        std::fs::rename(from, target)
    }
}

/// Finish or undo what writers of `target` that are no longer running left beside it:
/// a `.hindcast-tmp-` is removed, a `.hindcast-commit-`/`-replace-` moved into place, then
/// a `.hindcast-old-` removed, or renamed back where the target is missing. Best effort:
/// what cannot be done is logged and left for the next write.
fn recover(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let name = name.to_string_lossy();
    let mut left: Vec<(&str, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let kind = [TEMP, COMMIT, REPLACE, OLD]
                .into_iter()
                .find(|kind| file.starts_with(kind))?;
            let (pid, rest) = file[kind.len()..].split_once('-')?;
            let (_, rest) = rest.split_once('-')?;
            (rest == name && !running(pid.parse().ok()?)).then(|| (kind, entry.path()))
        })
        .collect();
    // Complete writes first (an old copy is only put back if none is), then the rest.
    left.sort_by_key(|(kind, _)| [COMMIT, REPLACE, OLD, TEMP].iter().position(|k| k == kind));
    for (kind, path) in left {
        let done = match kind {
            COMMIT | REPLACE => put_in_place(&path, target, kind == REPLACE),
            OLD if !target.exists() => std::fs::rename(&path, target),
            _ => remove(&path),
        };
        match done {
            Ok(()) => log::info!("finished an interrupted write: {}", path.display()),
            Err(e) => log::warn!(
                "cannot clean up {} after an interrupted write: {e}",
                path.display()
            ),
        }
    }
}

/// Whether process `pid` is running (its leftovers are not to be touched). Where there is
/// no `/proc` to ask, every process counts as running, and leftovers stay.
fn running(pid: u32) -> bool {
    pid == std::process::id()
        || !Path::new("/proc/self").exists()
        || Path::new(&format!("/proc/{pid}")).exists()
}

fn remove(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Put `from` in the place of the directory `target`: the old one is moved aside, the new
/// one renamed in, the old one removed. Between the two renames the target is missing (no
/// rename swaps two directories portably); each rename is atomic, so a reader never sees
/// a mix of the two.
fn replace_dir(from: &Path, target: &Path) -> std::io::Result<()> {
    let old = sibling(target, OLD);
    std::fs::rename(target, &old)?;
    crash_point("moved-aside");
    if let Err(e) = std::fs::rename(from, target) {
        return match std::fs::rename(&old, target) {
            Ok(()) => Err(e),
            Err(_) => Err(std::io::Error::other(format!(
                "{e}; the previous training set is kept at {}",
                old.display()
            ))),
        };
    }
    // The new set is in place; an old copy left behind is only wasted space.
    if let Err(e) = std::fs::remove_dir_all(&old) {
        log::warn!(
            "could not remove the previous training set at {}: {e}",
            old.display()
        );
    }
    Ok(())
}

/// Move every file under `from` to the same relative path under `into` (DataFusion's COPY
/// adds files to an existing directory), then remove `from`. Each file arrives whole; a
/// reader listing `into` meanwhile may see some of them (documented in
/// `docs/reliability.md`).
fn merge_into(from: &Path, into: &Path) -> std::io::Result<()> {
    if from.is_file() {
        std::fs::rename(from, into)?;
        crash_point("merging");
        return Ok(());
    }
    std::fs::create_dir_all(into)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        merge_into(&entry.path(), &into.join(entry.file_name()))?;
    }
    std::fs::remove_dir(from)
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove(&self.temp);
        }
    }
}

/// A `COPY ... TO` an object store (`s3://`), written under a hidden sibling prefix and
/// copied into place (server-side) once the whole write succeeded; a failed write's
/// objects are deleted. An object store has no rename: while the copies run, a reader may
/// see some of the new files (each whole), and a process killed mid-write leaves its
/// `.hindcast-tmp-` prefix behind, which readers of the target never list (see
/// `docs/reliability.md`).
pub(super) struct RemoteOutput {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/`: what the store's paths are relative to.
    base: String,
    /// The location DataFusion writes, as a URL (the target's, its last segment hidden).
    temp_url: String,
    temp: ObjectPath,
    target: ObjectPath,
}

impl RemoteOutput {
    pub fn for_target(target: &str, runtime: &RuntimeEnv) -> Result<Option<Self>> {
        let Ok(url) = Url::parse(target) else {
            return Ok(None);
        };
        if url.scheme() == "file" || url.host_str().is_none() {
            return Ok(None);
        }
        let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
        let store = runtime.object_store(&store_url)?;
        // The temporary location is the target's URL with its last segment prefixed, in
        // the URL's own encoding, so that DataFusion's parsing of it and this one's agree.
        let text = url.as_str();
        let slash = if text.ends_with('/') { "/" } else { "" };
        let Some((parent, name)) = text.trim_end_matches('/').rsplit_once('/') else {
            return Ok(None);
        };
        if parent.len() < store_url.as_str().trim_end_matches('/').len() || name.is_empty() {
            return Ok(None);
        }
        let temp_url = format!("{parent}/{}{name}{slash}", unique_prefix(TEMP));
        let path = |url: &str| -> Result<ObjectPath> {
            let url = Url::parse(url).map_err(|e| DataFusionError::External(Box::new(e)))?;
            ObjectPath::from_url_path(url.path())
                .map_err(|e| DataFusionError::External(Box::new(e)))
        };
        Ok(Some(Self {
            store,
            base: store_url.as_str().to_string(),
            temp: path(&temp_url)?,
            target: path(text)?,
            temp_url,
        }))
    }

    /// The location for DataFusion to write, shaped as the target is.
    pub fn temp_target(&self) -> String {
        self.temp_url.clone()
    }

    /// What DataFusion wrote and where each goes: one object at the temporary path (a
    /// file target), or objects under it (a directory; DataFusion decides which by the
    /// target's extension and `PARTITIONED BY`, so it is read back, not guessed).
    async fn written(&self) -> Result<Vec<(ObjectPath, ObjectPath)>> {
        if self.store.head(&self.temp).await.is_ok() {
            return Ok(vec![(self.temp.clone(), self.target.clone())]);
        }
        let objects: Vec<ObjectMeta> = self.store.list(Some(&self.temp)).try_collect().await?;
        Ok(objects
            .into_iter()
            .map(|object| {
                let to = object.location.prefix_match(&self.temp).map_or_else(
                    || self.target.clone(),
                    |parts| parts.fold(self.target.clone(), |path, part| path.join(part)),
                );
                (object.location, to)
            })
            .collect())
    }

    /// Copy every object written into place, then delete the written ones. A failure
    /// deletes what it had copied and what was written.
    pub async fn commit(self) -> Result<()> {
        let written = match self.written().await {
            Ok(written) => written,
            Err(e) => {
                self.abort().await;
                return Err(e);
            }
        };
        let mut copied = vec![];
        for (from, to) in &written {
            if let Err(e) = self.store.copy(from, to).await {
                for path in copied.iter().chain(written.iter().map(|(from, _)| from)) {
                    let _ = self.store.delete(path).await;
                }
                return Err(DataFusionError::from(e).context(format!(
                    "COPY wrote {} but could not copy it into place",
                    self.temp_url
                )));
            }
            copied.push(to.clone());
        }
        self.abort().await;
        Ok(())
    }

    /// Delete what was written (best effort: the store may be why the write failed).
    pub async fn abort(&self) {
        if let Ok(written) = self.written().await {
            for (object, _) in written {
                if let Err(e) = self.store.delete(&object).await {
                    log::warn!("cannot delete {}{object}: {e}", self.base);
                }
            }
        }
    }
}
