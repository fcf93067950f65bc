//! Our MessagePack messages and those of JavaScript's `@msgpack/msgpack` (what the
//! JavaScript udpack.io uses) read each other. Needs Node.js; the package is installed
//! into `tests/js/node_modules` (by `.ci/run`, or here with `npm install` if missing).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use udpack_io::message::{from_msgpack, to_msgpack};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct FileInfo {
    filename: String,
    filesize: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Chunk {
    #[serde(with = "serde_bytes")]
    chunk: Vec<u8>,
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

fn ensure_package() {
    let dir = js_dir();
    if dir.join("node_modules/@msgpack/msgpack").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .expect("npm is needed for the JavaScript compatibility test");
    assert!(status.success(), "npm install failed in {}", dir.display());
}

fn node(args: &[&str]) -> String {
    let out = Command::new("node")
        .arg(js_dir().join("compat.mjs"))
        .args(args)
        .output()
        .expect("node is needed for the JavaScript compatibility test");
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn javascript_reads_what_we_write_and_we_read_what_it_writes() {
    ensure_package();
    let dir = tempfile::tempdir().expect("tempdir");

    // Ours → JavaScript.
    let file = FileInfo {
        filename: "report é.pdf".into(),
        filesize: 123_456_789,
    };
    let chunk = Chunk {
        chunk: (0..300u32).map(|i| (i * 7) as u8).collect(),
    };
    let f = dir.path().join("ours-file.msgpack");
    std::fs::write(&f, to_msgpack("file", &file).expect("encode")).expect("write");
    assert_eq!(
        node(&["decode", f.to_str().expect("path")]),
        r#"["file",{"filename":"report é.pdf","filesize":123456789}]"#
    );
    let c = dir.path().join("ours-chunk.msgpack");
    std::fs::write(&c, to_msgpack("chunk", &chunk).expect("encode")).expect("write");
    let bytes: Vec<String> = chunk.chunk.iter().map(|b| b.to_string()).collect();
    assert_eq!(
        node(&["decode", c.to_str().expect("path")]),
        format!(r#"["chunk",{{"chunk":{{"$bin":[{}]}}}}]"#, bytes.join(","))
    );

    // JavaScript → ours.
    node(&["encode", dir.path().to_str().expect("path")]);
    let m = from_msgpack(&std::fs::read(dir.path().join("file.msgpack")).expect("read"))
        .expect("decode");
    assert_eq!(m.event(), "file");
    assert_eq!(m.data::<FileInfo>().expect("typed"), file);
    let m = from_msgpack(&std::fs::read(dir.path().join("chunk.msgpack")).expect("read"))
        .expect("decode");
    assert_eq!(m.event(), "chunk");
    assert_eq!(m.data::<Chunk>().expect("typed"), chunk);
}
