//! `COPY ... TO` a local path, written atomically: under a temporary sibling name, moved
//! into place only once the whole write succeeded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};

/// A `COPY ... TO` target written under a temporary sibling name and moved into place only
/// once the whole write succeeded, so a failed or cancelled write leaves no partial dataset.
/// Object-store targets have no rename and are written in place.
pub(super) struct TempOutput {
    /// A sibling of `target` with the same file name after a hidden prefix.
    temp: PathBuf,
    target: PathBuf,
    /// Whether the target was written as a directory (`'out/'`).
    is_dir: bool,
    /// Whether the commit replaces the target directory instead of adding to it.
    replace: bool,
    committed: bool,
}

impl TempOutput {
    pub fn for_target(target: &str) -> Option<Self> {
        let local = target.strip_prefix("file://").unwrap_or(target);
        if local.contains("://") {
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let target = PathBuf::from(local.trim_end_matches('/'));
        let name = target.file_name()?.to_string_lossy().into_owned();
        let temp = target.with_file_name(format!(
            ".hindcast-tmp-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
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

    pub fn commit(mut self) -> Result<()> {
        if !self.temp.exists() {
            // Nothing was written (e.g. an empty result into a directory).
            self.committed = true;
            return Ok(());
        }
        let result = if self.replace && self.target.is_dir() {
            replace(&self.temp, &self.target)
        } else if self.target.is_dir() {
            merge_into(&self.temp, &self.target)
        } else {
            std::fs::rename(&self.temp, &self.target)
        };
        result.map_err(|e| {
            DataFusionError::from(e).context(format!(
                "COPY wrote {} but could not move it to {}",
                self.temp.display(),
                self.target.display()
            ))
        })?;
        self.committed = true;
        Ok(())
    }
}

/// Put `from` in the place of the directory `target`: the old one is moved aside, the new
/// one renamed in, the old one removed. Between the two renames the target is missing (no
/// rename swaps two directories portably); each rename is atomic, so a reader never sees
/// a mix of the two.
fn replace(from: &Path, target: &Path) -> std::io::Result<()> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let old = target.with_file_name(format!(
        ".hindcast-old-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::rename(target, &old)?;
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
/// adds files to an existing directory), then remove `from`.
fn merge_into(from: &Path, into: &Path) -> std::io::Result<()> {
    if from.is_file() {
        return std::fs::rename(from, into);
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
        if self.committed {
            return;
        }
        let _ = if self.temp.is_dir() {
            std::fs::remove_dir_all(&self.temp)
        } else {
            std::fs::remove_file(&self.temp)
        };
    }
}
