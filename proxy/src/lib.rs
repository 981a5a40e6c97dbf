//! The ssepush push proxy: a phone about to sleep hands its SSE stream over; the proxy watches
//! the origin for it and wakes it through APNs, FCM or Web Push when an event it cares about
//! arrives; the phone resumes from its last event id and takes the stream back.
//!
//! * [`push`] — the push providers behind one small trait.
#![forbid(unsafe_code)]

pub mod push;
