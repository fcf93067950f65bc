//! The files an upload benchmark sends, and the check that what arrived is what was
//! sent (done after the clock stops, so it costs no run any time).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{BenchError, Result};

/// Buffer of the generator and of the comparison.
const BUF: usize = 1 << 20;

/// A SplitMix64 stream: incompressible bytes, fast enough for hundreds of MiB and
/// with no dependency on a random-number crate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

/// Writes `size` random bytes (seeded: the same seed, the same file) to `path`.
pub fn make_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut rng = SplitMix(seed);
    let mut out = BufWriter::with_capacity(BUF, File::create(path)?);
    let mut buf = vec![0u8; BUF];
    let mut left = size;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Makes `count` files of `size` bytes named `f0000.bin`... in `dir`; returns their
/// names in order.
pub fn make_files(dir: &Path, count: usize, size: u64) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    (0..count)
        .map(|i| {
            let name = format!("f{i:04}.bin");
            make_file(&dir.join(&name), size, i as u64 + 1)?;
            Ok(name)
        })
        .collect()
}

/// Whether `a` and `b` hold the same bytes.
pub fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; BUF], vec![0u8; BUF]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        if read_full(&mut fb, &mut bb[..n])? != n || ba[..n] != bb[..n] {
            return Ok(false);
        }
        if n < BUF {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the count.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Checks that every file of `names` in `sent` arrived in `received` unchanged.
pub fn verify(sent: &Path, received: &Path, names: &[String]) -> Result<()> {
    for name in names {
        let got: PathBuf = received.join(name);
        if !got.exists() || !same_content(&sent.join(name), &got)? {
            return Err(BenchError::Differs(got));
        }
    }
    Ok(())
}

/// Empties `dir` (the receiver of the next run starts from nothing: no name clash, no
/// resumed part), creating it if needed.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_file_and_a_changed_byte_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        make_file(&a, 3 * BUF as u64 + 5, 7).unwrap();
        make_file(&b, 3 * BUF as u64 + 5, 7).unwrap();
        make_file(&c, 3 * BUF as u64 + 5, 8).unwrap();
        assert!(same_content(&a, &b).unwrap());
        assert!(!same_content(&a, &c).unwrap());
        let mut bytes = std::fs::read(&b).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&b, &bytes).unwrap();
        assert!(!same_content(&a, &b).unwrap());
        std::fs::write(&b, &bytes[..last]).unwrap();
        assert!(!same_content(&a, &b).unwrap());
    }

    #[test]
    fn verify_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sent, got) = (dir.path().join("s"), dir.path().join("r"));
        let names = make_files(&sent, 2, 100).unwrap();
        fresh_dir(&got).unwrap();
        std::fs::copy(sent.join(&names[0]), got.join(&names[0])).unwrap();
        let err = verify(&sent, &got, &names).unwrap_err();
        assert!(matches!(err, BenchError::Differs(p) if p.ends_with(&names[1])));
        std::fs::copy(sent.join(&names[1]), got.join(&names[1])).unwrap();
        verify(&sent, &got, &names).unwrap();
    }
}
