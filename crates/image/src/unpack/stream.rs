//! One pass over a layer blob: decompress, hash the blob and the tar (diff_id), unpack.

use std::io::{self, Read};
use std::os::fd::BorrowedFd;

use flate2::read::MultiGzDecoder;

use super::{UnpackOptions, UnpackReport, unpack_tar_at};
use crate::digest::{Charge, DigestReader, Sha256Digest};
use crate::error::{DigestSubject, ImageError};
use crate::media::LayerMediaType;

/// What one verified blob unpack produced.
#[derive(Debug)]
pub(crate) struct BlobUnpack {
    /// The account of the unpack.
    pub(crate) report: UnpackReport,
    /// Length of the uncompressed tar stream.
    pub(crate) diff_size: u64,
    /// Length of the blob as read.
    pub(crate) blob_size: u64,
}

/// Unpacks a layer blob into `root` in a single streamed pass and verifies both digests.
///
/// The blob is hashed as read and the decompressed tar as decoded; after the tar ends, the rest
/// of both streams is read too so that the digests cover every byte. When unpacking fails for a
/// reason that corrupt content could explain, the rest of the blob is still hashed: a blob that
/// does not match its digest is reported as [`ImageError::DigestMismatch`], the root cause.
/// `options.max_bytes` bounds the uncompressed tar stream as well as the file content, and every
/// byte of the uncompressed stream is taken from `charge`'s budget as it is read (a read past it
/// fails with [`ImageError::TooLarge`]), so that layers unpacked at once share one limit. The
/// caller keeps or drops the charge.
pub(crate) fn unpack_blob<R: Read>(
    reader: R,
    media_type: LayerMediaType,
    expected_blob: &Sha256Digest,
    expected_diff_id: &Sha256Digest,
    root: BorrowedFd<'_>,
    options: &UnpackOptions,
    charge: &Charge<'_>,
) -> Result<BlobUnpack, ImageError> {
    let mut blob = DigestReader::new(reader);
    let (result, diff) = {
        let decoder: Box<dyn Read + '_> = match media_type {
            LayerMediaType::Tar => Box::new(&mut blob),
            LayerMediaType::TarGzip => Box::new(MultiGzDecoder::new(&mut blob)),
            LayerMediaType::TarZstd => match zstd::stream::read::Decoder::new(&mut blob) {
                Ok(decoder) => Box::new(decoder),
                Err(source) => return Err(ImageError::Decompress { compression: media_type, source }),
            },
        };
        let mut tar_stream = DigestReader::with_limit(decoder, options.max_bytes.bytes()).charging(charge);
        let result = unpack_tar_at(&mut tar_stream, root, options).and_then(|report| {
            // Trailing zero blocks and padding belong to the diff_id too.
            io::copy(&mut tar_stream, &mut io::sink()).map_err(|source| ImageError::InvalidTar { source })?;
            Ok(report)
        });
        let result = match result {
            Err(_) if tar_stream.exceeded() => Err(ImageError::TooLarge { limit: options.max_bytes }),
            Err(ImageError::InvalidTar { source }) if tar_stream.inner_failed() => {
                Err(ImageError::Decompress { compression: media_type, source })
            }
            other => other,
        };
        (result, tar_stream.finish())
    };
    let result = match result {
        Err(ImageError::Decompress { source, .. }) if blob.inner_failed() => {
            Err(ImageError::BlobRead { source })
        }
        Err(e @ (ImageError::TooLarge { .. } | ImageError::BlobRead { .. })) => return Err(e),
        other => other,
    };
    // Read what the decoder left (trailing bytes) so the blob digest covers all of it; a failure
    // to unpack is reported as a digest mismatch when the blob is not what it claims to be.
    if let Err(source) = io::copy(&mut blob, &mut io::sink()) {
        return Err(ImageError::BlobRead { source });
    }
    let (blob_digest, blob_size) = blob.finish();
    if blob_digest != *expected_blob {
        return Err(ImageError::DigestMismatch {
            what: DigestSubject::LayerBlob,
            expected: *expected_blob,
            actual: blob_digest,
        });
    }
    let report = result?;
    let (diff_id, diff_size) = diff;
    if diff_id != *expected_diff_id {
        return Err(ImageError::DigestMismatch {
            what: DigestSubject::LayerDiff,
            expected: *expected_diff_id,
            actual: diff_id,
        });
    }
    Ok(BlobUnpack { report, diff_size, blob_size })
}
