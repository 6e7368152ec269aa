//! Downloading a response body as it arrives, for bodies too large to hold in
//! memory (a backup of `/admin/snapshot`): each chunk goes to the caller's sink.
//!
//! Endpoints are tried in turn while none can be reached or one answers `503`;
//! once a body starts, a broken transfer is an error, never a short success:
//! the caller's sink sees every byte, and the body's own end says it is whole.

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;

use super::connection::Connection;
use super::{Client, ClientError};

impl Client {
    /// GETs `path_and_query` and hands the body to `sink` chunk by chunk, until
    /// it ends or `sink` returns false (the caller then has its reason).
    pub async fn download(
        &self,
        path_and_query: &str,
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(authorization) = self.authorization() {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        let mut last_error = ClientError::NoEndpoints;
        for index in 0..self.endpoint_count() {
            let mut connection = match self.connect(index).await {
                Ok(connection) => connection,
                Err(error @ ClientError::Connect { .. }) => {
                    last_error = error;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let target = connection.endpoint().target(path_and_query);
            let (parts, mut body) = connection
                .send_streaming(Method::GET, &target, &headers, Bytes::new())
                .await?;
            if parts.status != StatusCode::OK {
                let response = Connection::rest_of_response(parts, body).await;
                if response.status == StatusCode::SERVICE_UNAVAILABLE {
                    last_error = response.into_error();
                    continue;
                }
                return Err(response.into_error());
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| connection.protocol_error(error))?;
                if let Ok(data) = frame.into_data()
                    && !sink(&data)
                {
                    return Ok(());
                }
            }
            return Ok(());
        }
        Err(last_error)
    }
}
