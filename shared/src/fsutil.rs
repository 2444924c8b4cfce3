//! Atomic file writes: a file is either the old one or the whole new one, never half.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same folder is written,
/// flushed to disk and renamed over `path`.
///
/// Errors: the folder is missing or not writable, the disk is full, or the rename fails;
/// the error names the path. On error the old file is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file beside {}", path.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot flush {}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        // Keep the permissions of the file we replace.
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Reads at most `limit` bytes of `path`.
///
/// Errors: the file cannot be opened or read, or it is longer than `limit` bytes
/// (`InvalidData`, naming the limit), so `/dev/zero` or a huge file cannot exhaust
/// memory.
pub fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the limit of {limit} bytes"),
        ));
    }
    Ok(buf)
}

/// Reads a file the user named, `what` it is (`"scenario"`, `"configuration file"`),
/// at most `limit` bytes: [`read_capped`] with an error that says what, which file and
/// why, e.g. `cannot read scenario /dev/zero: larger than the limit of 1048576 bytes`.
///
/// Errors: the file cannot be opened or read, or it is longer than `limit` bytes (then
/// it fails after reading `limit + 1` bytes, so `/dev/zero` or a huge file fails fast).
pub fn read_input(path: &Path, limit: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    read_capped(path, limit)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))
}

/// [`read_input`] of a UTF-8 text file.
///
/// Errors: as [`read_input`], or the file is not UTF-8 (named).
pub fn read_input_string(path: &Path, limit: u64, what: &str) -> anyhow::Result<String> {
    String::from_utf8(read_input(path, limit, what)?)
        .map_err(|e| anyhow::anyhow!("{what} {} is not UTF-8 text: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_an_error_naming_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x.json"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir/x.json"));
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'x'; 100]).unwrap();
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        assert!(read_capped(&p, 99)
            .unwrap_err()
            .to_string()
            .contains("99 bytes"));
        assert!(read_capped(Path::new("/dev/zero"), 1 << 16).is_err());
        let e = read_input(Path::new("/dev/zero"), 1 << 16, "scenario").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read scenario /dev/zero: larger than the limit of 65536 bytes"
        );
        let e = read_input(&dir.path().join("none"), 10, "scenario").unwrap_err();
        assert!(e.to_string().contains("none: No such file"), "{e}");
    }
}
