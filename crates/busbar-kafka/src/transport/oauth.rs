//! OAUTHBEARER tokens handed to librdkafka's clients by busbar.
//!
//! librdkafka asks a client for a token by posting a refresh event on the client's main
//! queue, answered (from [`Context`]'s provider) only when the client is polled, and signs
//! in to no broker before it has one. rdkafka's `AdminClient` is never polled that way (it
//! polls only the queue of its own results), and a reader's first metadata lookup comes
//! before its first poll: left alone, connecting ends with "no metadata from the cluster"
//! and a subscription with "broker transport failure". So every client is given the current
//! token when it is made, and the admin client each refreshed one too: the one call into
//! librdkafka that rdkafka does not wrap for us.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};

use rdkafka::bindings::{rd_kafka_oauthbearer_set_token, rd_kafka_resp_err_t};
use rdkafka::client::{Client, ClientContext, OAuthToken};

#[cfg(doc)]
use crate::context::Context;

/// Gives `client` the token librdkafka signs in with; the reason when librdkafka refuses it
/// (a malformed token or principal).
pub(crate) fn sign_in<C: ClientContext>(
    client: &Client<C>,
    token: &OAuthToken,
) -> Result<(), String> {
    let value = CString::new(token.token.as_str())
        .map_err(|_| "the token provider gave a token with a NUL byte".to_owned())?;
    let principal = CString::new(token.principal_name.as_str())
        .map_err(|_| "the token's principal has a NUL byte".to_owned())?;
    let mut reason: [c_char; 512] = [0; 512];
    // SAFETY: the client pointer is valid while `client` is borrowed (rdkafka destroys the
    // handle only when the client drops); both strings are NUL-terminated and outlive
    // the call, which copies them; no extensions are given (null pointer, count 0); the
    // reason buffer is passed with its length and librdkafka NUL-terminates what it writes.
    // librdkafka takes its own lock to store the token, so any thread may call this.
    let code = unsafe {
        rd_kafka_oauthbearer_set_token(
            client.native_ptr(),
            value.as_ptr(),
            token.lifetime_ms,
            principal.as_ptr(),
            std::ptr::null_mut(),
            0,
            reason.as_mut_ptr(),
            reason.len(),
        )
    };
    if code == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Ok(());
    }
    let bytes: Vec<u8> = reason.iter().map(|&c| c as u8).collect();
    let why = CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Err(format!("librdkafka refused the token: {why}"))
}
