//! What the AWS clients share: one HTTPS client (hyper + rustls on ring, the crypto the
//! workspace already uses) and the standard configuration chain with an optional region.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// Returns the HTTPS client every AWS SDK client of the gateway uses.
#[must_use]
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the standard chain (environment, shared profile, IMDSv2 on EC2), with `region`
/// overriding the chain's region when given.
pub async fn load(region: Option<&str>, http: SharedHttpClient) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}
