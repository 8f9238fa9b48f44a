//! AWS SDK configuration, built once in `main`. The endpoint comes from configuration: the
//! standard `AWS_ENDPOINT_URL` (or a service-specific `AWS_ENDPOINT_URL_<SERVICE>`) points the
//! same binary at the moto server locally and at AWS in the cloud.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await
}

/// Whether an endpoint override is configured (local S3-compatible stores need path-style).
pub fn endpoint_overridden(config: &aws_config::SdkConfig) -> bool {
    config.endpoint_url().is_some()
}

#[cfg(feature = "s3")]
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(endpoint_overridden(config))
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

#[cfg(feature = "dynamodb")]
pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

#[cfg(feature = "sqs")]
pub fn sqs(config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

#[cfg(feature = "eventbridge")]
pub fn eventbridge(config: &aws_config::SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(config)
}
