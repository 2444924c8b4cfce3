//! What the transmitter's integration tests share: the pairing key of the transmitters
//! they start, and an HTTP client that sends its API token.

use syncstream_protocol::auth::PairingKey;

/// The pairing key of the transmitters in these tests.
pub fn key() -> PairingKey {
    PairingKey::parse(&"3c".repeat(32)).unwrap()
}

/// An HTTP client that sends the API token of [`key`].
pub fn api_client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key().api_token()).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}
