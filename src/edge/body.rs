//! Reading whole bodies (the client's request, a non-streamed upstream answer) within a limit.
//!
//! When the length is declared (and already checked against the limit) the body is read by the
//! platform in one `arrayBuffer()` call on the request or response itself and copied into wasm
//! once; otherwise it is read chunk by chunk and the limit is enforced as it grows, so an
//! undeclared body is never read past it.

use gateway_core::BodyError as ReadError;
use js_sys::Promise;
use wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::ReadableStream;

use super::reader::Reader;

/// A body to read: `whole` starts the platform's `arrayBuffer()` (of a request or response),
/// `stream` is the same body as a stream.
pub struct Source<'a> {
    pub whole: &'a dyn Fn() -> Result<Promise, JsValue>,
    pub stream: Option<ReadableStream>,
}

pub async fn read_all(
    source: Source<'_>,
    declared: Option<u64>,
    limit: u64,
) -> Result<Vec<u8>, ReadError> {
    let Some(stream) = source.stream else {
        return Ok(Vec::new());
    };
    if declared.is_some_and(|n| n <= limit) {
        let buffer = (source.whole)().map_err(|_| ReadError::Failed)?;
        let value = JsFuture::from(buffer)
            .await
            .map_err(|_| ReadError::Failed)?;
        let bytes = js_sys::Uint8Array::new(&value);
        if u64::from(bytes.length()) > limit {
            return Err(ReadError::TooLarge);
        }
        return Ok(bytes.to_vec());
    }
    let mut chunks = Reader::new(&stream).ok_or(ReadError::Failed)?;
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| ReadError::Failed)?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
