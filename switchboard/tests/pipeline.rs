//! The upload → thumbnail pipeline, end to end, with real images made here
//! (PNG and JPEG, several sizes) and checked with an image library of our
//! own, not the function's:
//! - on one machine: the sample `upload` function stores a file and sends
//!   the hub an S3-style notification; `thumbnail`, the one built into the
//!   binary (`switchboard sample thumbnail`), subscribes to it;
//! - on AWS's pattern: an upload to an S3 bucket (moto) notifies an SQS
//!   queue, the SQS source delivers it, `thumbnail.py` (the container
//!   images' function) reads and writes S3.

mod common;

use common::*;
use image::ImageFormat;
use std::time::Duration;

fn function(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/functions").join(name).display().to_string()
}

/// Sizes in, the thumbnail's size out (a 128-pixel box, aspect kept, never enlarged).
const CASES: [(&str, ImageFormat, u32, u32, u32, u32); 4] = [
    ("photos/wide.png", ImageFormat::Png, 640, 480, 128, 96),
    ("photos/small.png", ImageFormat::Png, 100, 50, 100, 50),
    ("photos/banner.jpg", ImageFormat::Jpeg, 1200, 300, 128, 32),
    ("photos/tall one.jpg", ImageFormat::Jpeg, 300, 1200, 32, 128),
];

#[tokio::test]
async fn uploads_are_thumbnailed_on_one_machine() {
    let dir = tempdir();
    let store = dir.path().join("objects").display().to_string();
    let stack = format!(
        "functions:
  upload:
    fprocess: python3 {upload}
    environment: {{mode: http, STORE_DIR: {store}, EVENTS_URL: 'http://127.0.0.1:CE_PORT/'}}
  thumbnail:
    fprocess: switchboard sample thumbnail
    environment: {{mode: http, STORE_DIR: {store}, MAX_PIXELS: '1000000'}}
    annotations: {{topic: com.switchboard.object.created}}
",
        upload = function("upload.py"),
    );
    let p = Platform::start_in(dir, &config(""), &stack, &[]).await;
    p.wait_ready(&["upload", "thumbnail"]).await;
    p.receiving().await;
    let upload = |key: &str, body: Vec<u8>| {
        let url = format!("{}/function/upload/{}", p.url, key.replace(' ', "%20"));
        async move { call("POST", &url, &[], body).await }
    };
    let thumbnail = |key: &str| {
        let url = format!("{}/function/upload/{}?bucket=thumbnails", p.url, key.replace(' ', "%20"));
        async move { get(&url).await }
    };

    for (key, format, w, h, tw, th) in CASES {
        let r = upload(key, picture(w, h, format)).await;
        assert_eq!(r.status, 201, "{key}: {}", r.text());
        assert_eq!(r.json()["event"]["delivered"], 1, "{key}: {}", r.text());
        let t = thumbnail(key).await;
        assert_eq!(t.status, 200, "{key}: {}", t.text());
        assert_eq!(measure(&t.body), (format, tw, th), "{key}");
    }

    // A camera's portrait: stored 300×100 on its side, EXIF orientation 6
    // (turn 90° clockwise to show it). The thumbnail stands upright.
    let r = upload("photos/portrait.jpg", sideways_jpeg(300, 100)).await;
    assert_eq!(r.json()["event"]["delivered"], 1, "{}", r.text());
    assert_eq!(measure(&thumbnail("photos/portrait.jpg").await.body), (ImageFormat::Jpeg, 43, 128));

    // Fifty at once, all thumbnailed.
    let uploads = (0..50).map(|i| {
        let format = if i % 2 == 0 { ImageFormat::Png } else { ImageFormat::Jpeg };
        upload(&format!("batch/{i}"), picture(400, 300, format))
    });
    for (i, r) in futures_util::future::join_all(uploads).await.into_iter().enumerate() {
        assert_eq!(r.status, 201, "batch/{i}: {}", r.text());
        assert_eq!(r.json()["event"]["delivered"], 1, "batch/{i}: {}", r.text());
    }
    for i in 0..50 {
        let format = if i % 2 == 0 { ImageFormat::Png } else { ImageFormat::Jpeg };
        assert_eq!(measure(&thumbnail(&format!("batch/{i}")).await.body), (format, 128, 96), "batch/{i}");
    }

    // Not an image: dead-lettered at the first answer (a 4xx), saying why.
    let r = upload("notes.txt", b"shopping: milk, eggs".to_vec()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["event"]["dead_lettered"], 1, "{}", r.text());
    let letters = p.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["function"], "thumbnail.openfaas-fn");
    assert_eq!(letters[0]["status"], 422);
    assert_eq!(letters[0]["attempts"], 1, "a 4xx is not retried");
    let reason = letters[0]["error"].as_str().unwrap();
    assert!(reason.contains("uploads/notes.txt: not an image"), "{reason}");
    assert_eq!(thumbnail("notes.txt").await.status, 404);

    // More pixels than MAX_PIXELS (here a million) is refused before decoding.
    let r = upload("huge.png", picture(1200, 900, ImageFormat::Png)).await;
    assert_eq!(r.json()["event"]["dead_lettered"], 1, "{}", r.text());
    let letters = p.dead_letters();
    assert_eq!((letters.len(), letters[1]["status"].as_u64()), (2, Some(422)), "{letters:?}");
    assert!(letters[1]["error"].as_str().unwrap().contains("uploads/huge.png: too large to decode safely"));

    // A key that would leave its bucket is refused before anything is stored.
    let r = upload("..%2Fescape.png", picture(10, 10, ImageFormat::Png)).await;
    assert_eq!(r.status, 400, "{}", r.text());
}

/// A JPEG of `width`×`height` whose EXIF says to show it turned 90°
/// clockwise (orientation 6), as a phone held upright writes it.
fn sideways_jpeg(width: u32, height: u32) -> Vec<u8> {
    use image::ImageEncoder;
    // A little-endian TIFF header and one IFD entry: Orientation (0x0112), SHORT, 1, 6.
    let exif =
        [b"II*\0".as_slice(), &[8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]].concat();
    let img = image::RgbImage::from_fn(width, height, |x, _| image::Rgb([(x % 256) as u8, 64, 128]));
    let mut out = vec![];
    let mut encoder = image::codecs::jpeg::JpegEncoder::new(&mut out);
    encoder.set_exif_metadata(exif).unwrap();
    encoder.write_image(&img, width, height, image::ExtendedColorType::Rgb8).unwrap();
    out
}

#[tokio::test]
async fn s3_uploads_notify_sqs_and_are_thumbnailed_in_s3() {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let (queue, uploads, thumbs) = (unique("sbtest-up-"), unique("sbtest-uploads-"), unique("sbtest-thumbs-"));
    let url = sqs_queue(&queue).await;
    let s3 = s3_client();
    for bucket in [&uploads, &thumbs] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    let notify =
        QueueConfiguration::builder().queue_arn(sqs_arn(&url).await).events(Event::S3ObjectCreated).build().unwrap();
    let notifications = NotificationConfiguration::builder().queue_configurations(notify).build();
    s3.put_bucket_notification_configuration()
        .bucket(&uploads)
        .notification_configuration(notifications)
        .send()
        .await
        .unwrap();

    let dir = tempdir();
    let stack = format!(
        "functions:
  thumbnail:
    fprocess: python3 {thumbnail}
    environment: {{mode: http, STORE: s3, S3_ENDPOINT: '{SQS}', THUMBNAIL_BUCKET: {thumbs},
      AWS_ACCESS_KEY_ID: test, AWS_SECRET_ACCESS_KEY: test, AWS_DEFAULT_REGION: us-east-1}}
    annotations: {{topic: 'sqs:{queue}'}}
",
        thumbnail = function("thumbnail.py"),
    );
    let cfg = config(&format!("cron:\n  enabled: false\n{}", sqs_section()));
    let p = Platform::start_in(dir, &cfg, &stack, &[]).await;
    p.wait_ready(&["thumbnail"]).await;

    for (key, format, w, h, _, _) in CASES {
        s3.put_object().bucket(&uploads).key(key).body(picture(w, h, format).into()).send().await.unwrap();
    }
    s3.put_object().bucket(&uploads).key("notes.txt").body(b"not a picture".to_vec().into()).send().await.unwrap();
    let settled = eventually(Duration::from_secs(60), || async {
        sqs_settled(&url).await == Some(true) && !p.dead_letters().is_empty()
    });
    assert!(settled.await, "the queue never settled:\n{}", p.proc.output());
    for (key, format, _, _, tw, th) in CASES {
        let object = s3.get_object().bucket(&thumbs).key(key).send().await;
        let object = object.unwrap_or_else(|e| panic!("no thumbnail for {key}: {e:?}\n{}", p.proc.output()));
        let bytes = object.body.collect().await.unwrap().into_bytes();
        assert_eq!(measure(&bytes), (format, tw, th), "{key}");
    }
    let letters = p.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0]["status"].as_u64(), letters[0]["attempts"].as_u64()), (Some(422), Some(1)));
    let reason = letters[0]["error"].as_str().unwrap();
    assert!(reason.contains(&format!("{uploads}/notes.txt: not an image")), "{reason}");
}
