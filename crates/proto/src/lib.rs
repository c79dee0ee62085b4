//! The xcat3 wire protocol: code generated from `proto/xcat3/v1/*.proto` and the conversions
//! between its messages and `xcat3-types`. Protobuf types stop here: services convert at the edge
//! and work on domain types inside.

pub mod convert;

/// Generated code, nested like the protobuf packages so cross-package references resolve.
pub mod xcat3 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    /// Package `xcat3.v1`: the public api.
    pub mod v1 {
        tonic::include_proto!("xcat3.v1");
    }
    pub mod internal {
        /// Package `xcat3.internal.v1`: api ⇄ conductors, not public.
        pub mod v1 {
            tonic::include_proto!("xcat3.internal.v1");
        }
    }
}

/// Generated messages, clients and servers of package `xcat3.v1`.
pub use xcat3::v1 as pb;

/// Service-to-service messages and services of package `xcat3.internal.v1` (api ⇄ conductors).
pub use xcat3::internal::v1 as internal;

/// Most machines one `NetbootConfig.ReportDiscovered` call may carry (the api refuses more; the
/// agents send larger backlogs in several reports).
pub const MAX_DISCOVERY_REPORT: usize = 10_000;

/// The encoded descriptors of every xcat3 service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("xcat3_descriptor");
