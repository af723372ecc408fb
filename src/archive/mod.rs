//! The archive in object storage (`--archive s3://bucket/prefix` or `file:///path`): every
//! snapshot the store puts in service and every sealed log segment, with its checksum and time
//! indexes, uploaded in order by `upload`, and named in the manifest (`manifest`) once whole;
//! `fetch` rebuilds a store from it on any machine, for `restore --from`.
//!
//! Objects are streamed from their files in parts (multipart uploads), never held whole, and
//! downloaded in ranges; each carries the CRC32C the manifest records, which a download checks
//! before the file is used.

mod fetch;
pub mod manifest;
mod upload;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;

pub use fetch::{bootstrap, stage};
pub use manifest::Manifest;
pub use upload::{ArchiveMetrics, Settings, run};

/// Bytes read from a file, or asked of the object store, at a time.
const PART: usize = 8 * 1024 * 1024;

/// An archive: the object store and the prefix its objects live under.
pub struct Archive {
    objects: Arc<dyn ObjectStore>,
    prefix: Key,
    url: String,
}

impl Archive {
    /// `s3://bucket/prefix` (credentials and region from the environment: AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, a web identity token, the instance's role) with
    /// `endpoint` for an S3-compatible store; or `file:///path` (a mounted volume).
    pub fn open(url: &str, endpoint: Option<&str>) -> Result<Archive> {
        let (objects, prefix): (Arc<dyn ObjectStore>, &str) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    bail!("--archive {url}: no bucket (s3://bucket/prefix)");
                }
                // A few retries within 30 s: past that the uploader's own backoff takes over,
                // and its log and metrics say the store is away.
                let retry = object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: Duration::from_secs(30),
                    ..Default::default()
                };
                let mut s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry);
                if let Some(endpoint) = endpoint {
                    s3 = s3
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let s3 = s3.build().with_context(|| format!("--archive {url}"))?;
                (Arc::new(s3), prefix)
            } else if let Some(path) = url.strip_prefix("file://") {
                std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
                let local = LocalFileSystem::new_with_prefix(path)
                    .with_context(|| format!("--archive {url}"))?;
                (Arc::new(local), "")
            } else {
                bail!("--archive {url}: not s3://bucket/prefix or file:///path");
            };
        Ok(Archive {
            objects,
            prefix: Key::from(prefix.trim_matches('/')),
            url: url.to_string(),
        })
    }

    fn key(&self, key: &str) -> Key {
        key.split('/')
            .fold(self.prefix.clone(), |k, part| k.child(part))
    }

    /// The manifest; an empty one where the archive holds none yet.
    pub async fn manifest(&self) -> Result<Manifest> {
        match self.objects.get(&self.key(manifest::NAME)).await {
            Ok(got) => Manifest::parse(&got.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Ok(Manifest::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}'s manifest", self.url)),
        }
    }

    async fn save_manifest(&self, manifest: &Manifest) -> Result<()> {
        let json = serde_json::to_vec(manifest)?;
        self.objects
            .put(&self.key(manifest::NAME), json.into())
            .await
            .with_context(|| format!("writing {}'s manifest", self.url))?;
        Ok(())
    }

    /// Copies the object `object` names into `path`, checking its size and CRC32C.
    async fn download(&self, object: &manifest::Object, path: &Path) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let key = self.key(&object.key);
        let mut file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let (mut at, mut crc) = (0u64, 0u32);
        while at < object.size {
            let end = (at + PART as u64).min(object.size);
            let bytes = self
                .objects
                .get_range(&key, at..end)
                .await
                .with_context(|| format!("reading {} from {}", object.key, self.url))?;
            crc = crc32c::crc32c_append(crc, &bytes);
            file.write_all(&bytes).await?;
            at = end;
        }
        file.sync_all().await?;
        let size = self.objects.head(&key).await?.size;
        if size != object.size || crc != object.crc32c {
            bail!(
                "the archived object {} is damaged: {size} bytes with CRC32C {crc:08x}, where the manifest says {} bytes with {:08x}",
                object.key,
                object.size,
                object.crc32c
            );
        }
        Ok(())
    }
}
