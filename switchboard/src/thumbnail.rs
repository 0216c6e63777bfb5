//! The sample `thumbnail` function (`switchboard sample thumbnail`), built
//! into the binary so that `up`'s upload → thumbnail pipeline runs with
//! what `cargo run` builds and nothing else (no Pillow). An HTTP function
//! in the watchdog's http mode, on 127.0.0.1:$PORT.
//!
//! Its input is an S3 event notification, as the sample `upload` function
//! sends it: for each object created it reads the image from the folders
//! of STORE_DIR (one per bucket), shrinks it to fit a THUMBNAIL_SIZE box
//! (aspect and format kept, never enlarged, EXIF orientation applied) and
//! writes it under the same key in THUMBNAIL_BUCKET. It answers 200 with
//! what it wrote; 422 for an object it will not thumbnail (missing, not a
//! PNG or JPEG, damaged, or more than MAX_PIXELS): a 4xx the hub does not
//! retry, so the event is dead-lettered with the reason; 503 when the
//! store cannot be read or written, which the hub retries.
//!
//! config/functions/thumbnail.py is the same function for the container
//! images, where it also reads and writes S3 (STORE=s3), with boto3.

use anyhow::Context;
use axum::Json;
use axum::http::StatusCode;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use serde_json::{Value, json};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

struct Settings {
    size: u32,
    thumbnails: String,
    store: PathBuf,
    max_pixels: u64,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let number = |name: &str, default: &str| {
            let value = var(name, default);
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{name}={value}: expected a positive whole number"))
        };
        Ok(Self {
            size: u32::try_from(number("THUMBNAIL_SIZE", "128")?).context("THUMBNAIL_SIZE: too large")?,
            thumbnails: var("THUMBNAIL_BUCKET", "thumbnails"),
            store: var("STORE_DIR", "objects").into(),
            // A small file can claim billions of pixels; decoding it would
            // take the memory of the machine. Past this it is refused.
            max_pixels: number("MAX_PIXELS", "40000000")?,
        })
    }
}

/// Why an event failed: `Refused` is the object's fault (4xx, not retried),
/// `Store` the store's (503, retried).
enum Failure {
    Refused(String),
    Store(String),
}

pub async fn run() -> anyhow::Result<()> {
    let settings = Arc::new(Settings::from_env()?);
    let port = std::env::var("PORT").unwrap_or_else(|_| "5000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} ($PORT)"))?;
    let app = axum::Router::new().fallback(axum::routing::post(move |body: axum::body::Bytes| {
        let settings = settings.clone();
        // Decoding and resizing are CPU work: off the async threads.
        async move {
            tokio::task::spawn_blocking(move || handle(&settings, &body)).await.unwrap_or_else(|e| {
                (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": format!("the thumbnail task failed: {e}")})))
            })
        }
    }));
    axum::serve(listener, app).await.context("the thumbnail server stopped")
}

fn handle(settings: &Settings, body: &[u8]) -> (StatusCode, Json<Value>) {
    let event: Value = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(e) => {
            let error = format!("expected an S3 event notification (JSON): {e}");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
        }
    };
    let mut written = Vec::new();
    for (bucket, key) in created(&event) {
        if bucket == settings.thumbnails {
            continue; // a thumbnail's own notification: nothing to do
        }
        match thumbnail(settings, &bucket, &key) {
            Ok(done) => written.push(done),
            Err(Failure::Refused(why)) => {
                println!("thumbnail: refused {why}");
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": why })));
            }
            Err(Failure::Store(why)) => {
                println!("thumbnail: failed {why}");
                return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": why })));
            }
        }
    }
    (StatusCode::OK, Json(json!({ "thumbnails": written })))
}

/// (bucket, key) of each object the notification says was created.
fn created(event: &Value) -> Vec<(String, String)> {
    let records = event["Records"].as_array().map(Vec::as_slice).unwrap_or_default();
    records
        .iter()
        .filter(|r| r["eventName"].as_str().is_some_and(|name| name.starts_with("ObjectCreated")))
        .filter_map(|r| {
            let bucket = r["s3"]["bucket"]["name"].as_str()?;
            // S3 writes keys URL-encoded in notifications (a space as '+').
            let key = r["s3"]["object"]["key"].as_str()?.replace('+', " ");
            let key = percent_encoding::percent_decode_str(&key).decode_utf8().ok()?;
            Some((bucket.to_string(), key.into_owned()))
        })
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .collect()
}

fn thumbnail(settings: &Settings, bucket: &str, key: &str) -> Result<Value, Failure> {
    let name = format!("{bucket}/{key}");
    let data = match std::fs::read(object_path(settings, bucket, key)?) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::Refused(format!("{name}: no such object")));
        }
        Err(e) => return Err(Failure::Store(format!("cannot read {name}: {e}"))),
    };
    let (image, format) =
        decode(&data, settings.max_pixels).map_err(|why| Failure::Refused(format!("{name}: {why}")))?;
    let small = if image.width() > settings.size || image.height() > settings.size {
        image.thumbnail(settings.size, settings.size)
    } else {
        image
    };
    let mut out = Cursor::new(Vec::new());
    let encoded = match format {
        // JPEG has no alpha channel.
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(small.to_rgb8())
            .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)),
        _ => small.write_to(&mut out, format),
    };
    encoded.map_err(|e| Failure::Refused(format!("{name}: cannot write it as {format:?}: {e}")))?;
    let path = object_path(settings, &settings.thumbnails, key)?;
    write(&path, out.get_ref())
        .map_err(|e| Failure::Store(format!("cannot write {}/{key}: {e}", settings.thumbnails)))?;
    let (width, height) = (small.width(), small.height());
    println!("thumbnail: {name} -> {}/{key} {width}x{height} {format:?}", settings.thumbnails);
    Ok(
        json!({"bucket": settings.thumbnails, "key": key, "width": width, "height": height, "format": format!("{format:?}").to_uppercase()}),
    )
}

/// The image and its format, with its EXIF orientation applied; or why not.
fn decode(data: &[u8], max_pixels: u64) -> Result<(DynamicImage, ImageFormat), String> {
    let reader = || ImageReader::new(Cursor::new(data)).with_guessed_format().map_err(|e| e.to_string());
    let format = reader()?.format().ok_or("not an image this function can read (PNG or JPEG)")?;
    let (width, height) = reader()?.into_dimensions().map_err(|e| format!("a damaged or unsupported image ({e})"))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(format!("too large to decode safely ({width}x{height} pixels, more than MAX_PIXELS={max_pixels})"));
    }
    let mut reader = reader()?;
    reader.limits(Limits::default());
    let mut decoder = reader.into_decoder().map_err(|e| format!("a damaged or unsupported image ({e})"))?;
    let orientation = decoder.orientation().map_err(|e| format!("a damaged image ({e})"))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| format!("a damaged or unsupported image ({e})"))?;
    image.apply_orientation(orientation);
    Ok((image, format))
}

/// The file of an object: a folder per bucket, the key's parts below it;
/// a key that would leave its bucket is refused.
fn object_path(settings: &Settings, bucket: &str, key: &str) -> Result<PathBuf, Failure> {
    let names: Vec<&str> = std::iter::once(bucket).chain(key.split('/')).collect();
    if key.starts_with('/') || names.iter().any(|n| matches!(*n, "" | "." | "..") || n.contains('\0')) {
        return Err(Failure::Refused(format!("{bucket}/{key}: not a key this store can hold")));
    }
    Ok(names.iter().fold(settings.store.clone(), |path, name| path.join(name)))
}

/// Writes through a temporary file, so a reader never sees half a thumbnail.
fn write(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let partial = PathBuf::from(format!("{}.{}-{n}.part", path.display(), std::process::id()));
    std::fs::write(&partial, data)?;
    std::fs::rename(&partial, path)
}
