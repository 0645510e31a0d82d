//! Running hindcast's plans across processes.
//!
//! - [`codec`]: hindcast's operators as bytes ([`HindcastCodec`]), composed with
//!   DataFusion's own protobuf for everything else.

pub mod codec;

pub use codec::{HindcastCodec, decode_plan, encode_plan};
