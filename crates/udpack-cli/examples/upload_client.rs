//! The upload client of the udpack.io examples.
//!
//! ```sh
//! cargo run --release -p udpack-cli --example upload_client -- keys/pubkey.pem FILE [SERVER]
//! ```
//! Uploads FILE to SERVER (default 127.0.0.1:45456) with the token in `UDPACK_TOKEN`
//! (default `ea970f20b09311ebbe1d11acebc10dbf`), printing the progress once a second
//! and the elapsed time at the end. Logs go to `logs/udpack.log`,
//! `logs/udpack.io.log` and `logs/client.log`.

#[path = "common/upload.rs"]
mod upload;

use std::path::PathBuf;

use tracing::level_filters::LevelFilter;
use udpack_io::{Client, ClientOptions, KeyFile, PublicKey, Reconnect};

#[tokio::main]
async fn main() -> Result<(), upload::BoxError> {
    let mut args = std::env::args().skip(1);
    let key_path = args.next().unwrap_or_else(|| "keys/pubkey.pem".into());
    let file = PathBuf::from(
        args.next()
            .ok_or("usage: upload_client PUBKEY FILE [SERVER]")?,
    );
    let server = args.next().unwrap_or_else(|| "127.0.0.1:45456".into());
    let token =
        std::env::var("UDPACK_TOKEN").unwrap_or_else(|_| "ea970f20b09311ebbe1d11acebc10dbf".into());
    let _logs = udpack_io::logging::init("logs", "client", LevelFilter::DEBUG)?;
    let key = PublicKey::load(&key_path)?;
    let client = Client::bind(
        ClientOptions::new(key)
            .token(token)
            .reconnect(Reconnect::off()),
    )
    .await?;
    client.connect(server).await?;
    upload::send_file(&client, &file, false).await?;
    client.close();
    Ok(())
}
