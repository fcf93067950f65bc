//! The `udpack` command as a library: the upload protocol ([`protocol`]), the receiving
//! server ([`serve`]), the sending client ([`send`]), key generation ([`keygen`]), the
//! link measurement ([`bench`]) and the loopback [`demo`]. [`commands`] runs them as the
//! binary's subcommands do, from arguments, files and the environment; the binary only
//! parses and dispatches.

pub mod bench;
pub mod commands;
pub mod demo;
pub mod error;
pub mod keygen;
pub mod logs;
pub mod paths;
pub mod progress;
pub mod protocol;
pub mod send;
pub mod serve;
pub mod shutdown;

pub use error::CliError;
