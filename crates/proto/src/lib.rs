//! The xcat3 wire protocol: code generated from `proto/xcat3/v1/*.proto` and the conversions
//! between its messages and `xcat3-types`. Protobuf types stop here: services convert at the edge
//! and work on domain types inside.

pub mod convert;

/// Generated messages, clients and servers of package `xcat3.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("xcat3.v1");
}

/// The encoded descriptors of every xcat3 service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("xcat3_descriptor");
