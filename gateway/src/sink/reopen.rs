//! The access-log file, opened again on request: after logrotate has renamed it, SIGHUP
//! (`systemctl reload egret`) makes the writer continue in a new file at the configured path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Asks the access-log file to be opened again before its next write.
#[derive(Clone, Debug, Default)]
pub struct Reopen(Arc<AtomicBool>);

impl Reopen {
    /// Asks for the file to be opened again; the writer does it before its next write.
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// A log file appended to, opened again at its path when [`Reopen::request`] was called.
#[derive(Debug)]
pub(super) struct ReopenableFile {
    path: PathBuf,
    file: File,
    reopen: Reopen,
}

impl ReopenableFile {
    /// Opens `path` (created if needed) for appending.
    pub(super) fn open(path: &Path, reopen: Reopen) -> io::Result<ReopenableFile> {
        Ok(ReopenableFile {
            path: path.to_owned(),
            file: append(path)?,
            reopen,
        })
    }

    fn reopen_if_asked(&mut self) {
        if !self.reopen.take() {
            return;
        }
        match append(&self.path) {
            Ok(file) => {
                // The old file's buffered bytes were written by the caller's last flush.
                self.file = file;
                tracing::info!("access log reopened: {}", self.path.display());
            }
            Err(error) => tracing::warn!(
                "cannot reopen the access log {}: {error}; still writing to the file it had open",
                self.path.display()
            ),
        }
    }
}

impl Write for ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reopen_if_asked();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_moves_the_next_write_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let reopen = Reopen::default();
        let mut file = ReopenableFile::open(&path, reopen.clone()).unwrap();
        file.write_all(b"one\n").unwrap();
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        file.write_all(b"two\n").unwrap();
        reopen.request();
        file.write_all(b"three\n").unwrap();
        file.write_all(b"four\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\nfour\n");
    }

    #[test]
    fn a_failed_reopen_keeps_writing_to_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let path = logs.join("access.log");
        let reopen = Reopen::default();
        let mut file = ReopenableFile::open(&path, reopen.clone()).unwrap();
        let moved = dir.path().join("moved");
        std::fs::rename(&logs, &moved).unwrap();
        reopen.request();
        file.write_all(b"kept\n").unwrap();
        let old = moved.join("access.log");
        assert_eq!(std::fs::read_to_string(old).unwrap(), "kept\n");
        assert!(!path.exists());
    }
}
