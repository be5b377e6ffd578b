//! Integration tests for the demo app: the server run in-process on
//! `127.0.0.1:0` (`server`), and the built binary run as a process (`binary`).
//! `http` is a tiny hand-written HTTP/1.1 client, to keep dependencies small.

mod binary;
mod http;
mod long_lived;
mod server;
