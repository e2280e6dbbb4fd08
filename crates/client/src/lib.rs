//! A typed async client of sandpit's native HTTP API (`/v1`), and the discovery of the server
//! URL and API key the CLI uses.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sandpit_client::{Client, Credentials};
//! let creds = Credentials::discover()?;
//! let client = Client::new(&creds.url, &creds.api_key)?;
//! let sandbox = client.create(&Default::default(), true).await?;
//! println!("{} is {}", sandbox.id, sandbox.state);
//! # Ok(()) }
//! ```

mod client;
mod credentials;
mod error;
mod stream;

use base64::Engine as _;

pub use client::{ApiStream, Client, LedgerPage, ListFilter};
pub use credentials::{
    CredentialSource, Credentials, CredentialsError, CredentialsFile, DEFAULT_URL, KEY_VAR, URL_VAR,
    default_credentials_path,
};
pub use error::{ClientError, Result};
pub use sandpit_types::{ErrorBody, SandboxState};
pub use sandpit_types::{accounts, api};

/// The bytes of a streamed exec's `stdout`/`stderr` event (base64 `data`).
pub fn decode_output(data: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| ClientError::Decode(format!("exec output is not base64: {e}")))
}
