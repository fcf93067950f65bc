//! The upload server of the udpack.io examples.
//!
//! ```sh
//! cargo run --release -p udpack-cli --example upload_server -- keys/prikey.pem [out-dir]
//! ```
//! Listens on 0.0.0.0:45456, accepts the token in `UDPACK_TOKEN` (default
//! `ea970f20b09311ebbe1d11acebc10dbf`), writes one uploaded file to `out-dir` (default
//! the current directory), prints the progress once a second and exits. Logs go to
//! `logs/udpack.log`, `logs/udpack.io.log` and `logs/server.log`.

#[path = "common/upload.rs"]
mod upload;

use std::path::PathBuf;

use tracing::level_filters::LevelFilter;
use udpack_io::{KeyFile, PrivateKey, Server, ServerOptions};

#[tokio::main]
async fn main() -> Result<(), upload::BoxError> {
    let mut args = std::env::args().skip(1);
    let key_path = args.next().unwrap_or_else(|| "keys/prikey.pem".into());
    let out_dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let token =
        std::env::var("UDPACK_TOKEN").unwrap_or_else(|_| "ea970f20b09311ebbe1d11acebc10dbf".into());
    let _logs = udpack_io::logging::init("logs", "server", LevelFilter::DEBUG)?;
    let key = PrivateKey::load(&key_path)?;
    let server = Server::bind(ServerOptions::new(key).auth(move |t| t == token.as_bytes())).await?;
    println!("listening on {}", server.local_addr());
    let started = std::time::Instant::now();
    let path = upload::serve_one(&server, &out_dir, false).await?;
    println!(
        "received {} in {:.3} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    server.shutdown().await;
    Ok(())
}
