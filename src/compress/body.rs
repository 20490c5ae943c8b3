//! The streaming encoder: a response body compressed frame by frame as it
//! flows, with `async-compression` (gzip by flate2, brotli by the `brotli`
//! crate). Nothing is buffered beyond the encoder's own window and one
//! output chunk: a large or endless body streams through in constant
//! memory.
//!
//! The levels are chosen for compressing on the fly, where the CPU is paid
//! on every request: gzip level [`GZIP_LEVEL`] (nginx's default
//! `gzip_comp_level`), brotli quality [`BROTLI_QUALITY`] with a
//! [`BROTLI_WINDOW`]-bit window (256 KiB of history per response instead of
//! brotli's default 4 MiB). Measured on the benchmark's 20 KiB JSON
//! document (valgrind instruction counts per document, encoder set-up
//! included):
//!
//! | encoding | bytes | instructions |
//! | --- | --: | --: |
//! | gzip 1 | 3,631 | 0.86 M |
//! | gzip 3 | 2,761 | 1.68 M |
//! | gzip 5 | 2,545 | 1.98 M |
//! | gzip 6 | 2,526 | 2.25 M |
//! | br 1 | 3,506 | 1.50 M |
//! | br 3 | 2,656 | 1.92 M |
//! | br 4 | 2,616 | 2.92 M |
//! | br 5 | 2,173 | 4.39 M |
//!
//! gzip 1 costs less than half of gzip 5 for 43 % more bytes; br 3 makes
//! gzip 5's size for gzip 5's CPU, and br 4 buys 1.5 % for 50 % more.
//! Files worth squeezing harder are better precompressed (`FILE.br`,
//! `FILE.gz`).

use super::Coding;
use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http_body::{Body, Frame};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio_util::either::Either;
use tokio_util::io::{StreamReader, poll_read_buf};

/// gzip level (1 fastest … 9 smallest).
pub const GZIP_LEVEL: i32 = 1;
/// brotli quality (0 fastest … 11 smallest).
pub const BROTLI_QUALITY: i32 = 3;
/// brotli window, as a power of two.
pub const BROTLI_WINDOW: i32 = 18;
/// How much compressed output one frame carries at most.
const CHUNK: usize = 16 * 1024;

type Source<B> = StreamReader<Frames<B>, Bytes>;

/// `B`, compressed with one coding.
pub struct Encoded<B> {
    encoder: Either<GzipEncoder<Source<B>>, BrotliEncoder<Source<B>>>,
    out: BytesMut,
}

impl<B> Encoded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(body: B, coding: Coding) -> Encoded<B> {
        let source = StreamReader::new(Frames(body));
        let encoder = match coding {
            Coding::Gzip => Either::Left(GzipEncoder::with_quality(
                source,
                Level::Precise(GZIP_LEVEL),
            )),
            Coding::Br => {
                let params = async_compression::brotli::EncoderParams::default()
                    .quality(Level::Precise(BROTLI_QUALITY))
                    .window_size(BROTLI_WINDOW);
                Either::Right(BrotliEncoder::with_params(source, params))
            }
        };
        Encoded {
            encoder,
            out: BytesMut::new(),
        }
    }
}

impl<B> Body for Encoded<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.out.capacity() - this.out.len() < CHUNK / 4 {
            this.out.reserve(CHUNK);
        }
        match ready!(poll_read_buf(
            Pin::new(&mut this.encoder),
            cx,
            &mut this.out
        )) {
            Ok(0) => Poll::Ready(None),
            Ok(_) => Poll::Ready(Some(Ok(Frame::data(this.out.split().freeze())))),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// The data frames of a body as a stream of byte chunks (what the
/// encoder's reader takes). Trailers are dropped: they would describe the
/// uncompressed bytes.
pub struct Frames<B>(B);

impl<B> Stream for Frames<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.0).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(io::Error::other(e)))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder};
    use http_body_util::{BodyExt, StreamBody};
    use tokio::io::AsyncReadExt;

    /// A body of `chunks`, one frame each.
    fn chunked(chunks: Vec<Vec<u8>>) -> impl Body<Data = Bytes, Error = io::Error> + Unpin {
        StreamBody::new(futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, io::Error>(Frame::data(Bytes::from(c)))),
        ))
    }

    async fn round_trip(coding: Coding) {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"user {i}\"}},").into_bytes())
            .collect();
        let chunks: Vec<Vec<u8>> = text.chunks(777).map(<[u8]>::to_vec).collect();
        let encoded = Encoded::new(chunked(chunks), coding)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(
            encoded.len() < text.len() / 4,
            "{coding:?}: {} bytes",
            encoded.len()
        );
        let mut decoded = Vec::new();
        match coding {
            Coding::Gzip => {
                GzipDecoder::new(&encoded[..])
                    .read_to_end(&mut decoded)
                    .await
            }
            Coding::Br => {
                BrotliDecoder::new(&encoded[..])
                    .read_to_end(&mut decoded)
                    .await
            }
        }
        .unwrap();
        assert_eq!(decoded, text);
    }

    #[tokio::test]
    async fn gzip_round_trips() {
        round_trip(Coding::Gzip).await;
    }

    #[tokio::test]
    async fn brotli_round_trips() {
        round_trip(Coding::Br).await;
    }

    #[tokio::test]
    async fn an_error_of_the_source_ends_the_body_with_an_error() {
        let failing = StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"some text"))),
            Err(io::Error::other("upstream broke")),
        ]));
        let result = Encoded::new(failing, Coding::Gzip).collect().await;
        assert!(result.is_err());
    }
}
