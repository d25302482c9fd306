//! The protobuf codec of raftkine's gRPC services and clients: tonic-prost's, except that an
//! outgoing message's buffer is sized for the whole message before it is encoded, and that
//! every call starts with small buffers.
//!
//! tonic starts every message in a buffer of 8 KiB and prost grows it while writing, so a
//! large answer (a page of a Kubernetes list is a few MiB) was copied into a new buffer each
//! time the size doubled, on freshly faulted-in pages. Reserving `encoded_len` first writes it
//! once. For small messages the reservation costs one length pass.
//!
//! tonic also gives every call (and every open stream) an 8 KiB buffer to decode into and
//! another to encode into, whatever the messages' sizes. Most etcd messages are a few hundred
//! bytes, so with 1000 calls in flight, or 1000 lease keep-alive streams open, those buffers
//! were ~16 MiB of the server's memory (bench/README.md, session 9). Both now start at
//! [`MESSAGE_BUFFER_BYTES`]; a larger message grows them once, to its length (the decoder
//! reserves it from the message's header, the encoder from `encoded_len`).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

/// The first size of a call's decode and encode buffers: room for most etcd messages.
pub const MESSAGE_BUFFER_BYTES: usize = 512;

/// tonic's default: an encoder hands its bytes on once it holds this many.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(MESSAGE_BUFFER_BYTES, YIELD_THRESHOLD)
}

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
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
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
        buffer_settings()
    }
}
