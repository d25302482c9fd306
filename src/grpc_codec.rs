//! The protobuf codec of raftkine's gRPC services and clients: tonic-prost's, except that an
//! outgoing message's buffer is sized for the whole message before it is encoded.
//!
//! tonic starts every message in a buffer of 8 KiB and prost grows it while writing, so a
//! large answer (a page of a Kubernetes list is a few MiB) was copied into a new buffer each
//! time the size doubled, on freshly faulted-in pages. Reserving `encoded_len` first writes it
//! once. For small messages the reservation is already there and costs one length pass.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

/// The codec named by the generated service and client code (see `build.rs`).
#[derive(Debug, Clone)]
pub struct SizedProstCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for SizedProstCodec<T, U> {
    fn default() -> Self {
        SizedProstCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for SizedProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedProstEncoder { _pd: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::default())
    }
}

/// Encodes a message into a buffer reserved for all of it.
#[derive(Debug, Clone)]
pub struct SizedProstEncoder<T> {
    _pd: PhantomData<T>,
}

impl<T: Message> Encoder for SizedProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
