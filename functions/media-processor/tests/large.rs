//! media-processor on large objects, against the moto server and a real Postgres. A 100 MiB
//! video (made here, never committed) is read through in flat memory — this test binary counts
//! every allocation (its own binary, so the counting allocator sees these tests alone) — and
//! becomes ready with its SHA-256 and size, copied to the public prefix as a download; an object
//! larger than its declared size is rejected and removed without being read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use aws_sdk_s3::primitives::ByteStream;
use media_processor::Processor;
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::adapters::media_store::MediaStore;
use std::alloc::System;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use testkit::{TestApp, TestUser, get, post};
use uuid::Uuid;

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

const MIB: usize = 1024 * 1024;

/// The allocator counts the whole process: the tests of this binary run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct World {
    aws: aws_config::SdkConfig,
    _app: TestApp,
    api: axum::Router,
    store: MediaStore,
    processor: Processor,
    owner: TestUser,
    tenant: Uuid,
}

async fn world() -> World {
    let aws = testkit::moto().await;
    let store = testkit::media_store(&aws, "large").await;
    let app = TestApp::new().await;
    let owner = app.user("owner").await;
    let tenant = app.tenant(&owner).await;
    World {
        aws,
        api: cms_media::router(app.core.clone(), store.clone()),
        processor: Processor {
            db: app.core.db.clone(),
            store: store.clone(),
        },
        _app: app,
        store,
        owner,
        tenant,
    }
}

/// A file of `size` bytes that sniffs as MP4 (an `ftyp` box, then noise), and its SHA-256;
/// written a MiB at a time so the test itself stays small in memory.
fn video_file(size: usize) -> (PathBuf, String) {
    let path = std::env::temp_dir().join(format!("media-large-{}.mp4", Uuid::new_v4().simple()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut sha = Sha256::new();
    let mut block = vec![0u8; MIB];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut written = 0;
    while written < size {
        for b in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = (state >> 24) as u8;
        }
        if written == 0 {
            block[..24].copy_from_slice(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2");
        }
        let n = MIB.min(size - written);
        file.write_all(&block[..n]).unwrap();
        sha.update(&block[..n]);
        written += n;
    }
    file.flush().unwrap();
    (path, hex::encode(sha.finalize()))
}

impl World {
    /// Grants an upload of `size` bytes of `content_type`; returns the item.
    async fn grant(&self, content_type: &str, size: usize) -> Value {
        let r = post("/cms/media/uploads")
            .json(json!({"name": "clip", "content_type": content_type, "size": size}))
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .send(&self.api)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(
            r.json["upload"]["url"].as_str().unwrap().contains("/uploads/"),
            "{}",
            r.json
        );
        r.json["media"].clone()
    }

    fn keys(&self, media: &Value) -> (String, String) {
        let id = Uuid::parse_str(media["id"].as_str().unwrap()).unwrap();
        (
            MediaStore::upload_key(self.tenant, id),
            MediaStore::public_key(self.tenant, id),
        )
    }

    /// Puts the file under `key` as the browser's PUT would, streamed from disk.
    async fn put_file(&self, key: &str, path: &PathBuf, content_type: &str) {
        self.store
            .s3
            .put_object()
            .bucket(&self.store.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from_path(path).await.unwrap())
            .send()
            .await
            .unwrap();
        std::fs::remove_file(path).unwrap();
    }

    fn event(&self, key: &str) -> Value {
        json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": self.store.bucket}, "object": {"key": key}}}]})
    }

    async fn head(&self, key: &str) -> Option<aws_sdk_s3::operation::head_object::HeadObjectOutput> {
        match self
            .store
            .s3
            .head_object()
            .bucket(&self.store.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Some(out),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => None,
            Err(e) => panic!("{e:?}"),
        }
    }

    async fn media(&self, media: &Value) -> Value {
        let r = get(&format!("/cms/media/{}", media["id"].as_str().unwrap()))
            .bearer(&self.owner.token)
            .tenant(self.tenant)
            .send(&self.api)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json
    }
}

/// Processes `event` with `processor` and returns its answer and the peak memory growth.
async fn measured(processor: &Processor, event: Value) -> (Value, usize) {
    GLOBAL.reset_peak_memory();
    let out = processor.handle(event).await.unwrap();
    (out, GLOBAL.get_peak_memory())
}

/// A TCP relay to the moto server that counts the bytes it hands back (what a client read from
/// S3, give or take the sockets' buffers); its endpoint URL and the count.
fn counting_relay(aws: &aws_config::SdkConfig) -> (String, Arc<AtomicUsize>) {
    let moto = aws
        .endpoint_url()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let moto = moto.to_socket_addrs().unwrap().next().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let (Ok(client), Ok(server)) = (client, TcpStream::connect(moto)) else {
                continue;
            };
            let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
                let _ = to_server.shutdown(Shutdown::Write);
            });
            let counted = Arc::clone(&counted);
            std::thread::spawn(move || {
                let (mut from_server, mut to_client) = (server, client);
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = from_server.read(&mut buf) {
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    counted.fetch_add(n, Ordering::Relaxed);
                }
                let _ = to_client.shutdown(Shutdown::Both);
                let _ = from_server.shutdown(Shutdown::Both);
            });
        }
    });
    (endpoint, count)
}

#[tokio::test]
async fn a_100_mib_video_is_read_through_in_flat_memory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let w = world().await;
    let size = 100 * MIB;
    let item = w.grant("video/mp4", size).await;
    let (upload, public) = w.keys(&item);
    let (path, sha) = video_file(size);
    w.put_file(&upload, &path, "video/mp4").await;
    assert!(
        w.head(&public).await.is_none(),
        "nothing is public before it is checked"
    );

    let (out, growth) = measured(&w.processor, w.event(&upload)).await;
    println!(
        "processing {} MiB: peak memory growth {:.2} MiB",
        size / MIB,
        growth as f64 / MIB as f64
    );
    assert_eq!(out["processed"][0]["outcome"], "ready", "{out}");
    assert!(
        growth < 16 * MIB,
        "memory grew by {growth} bytes while processing a {size}-byte object"
    );

    let m = w.media(&item).await;
    assert_eq!(m["status"], "ready");
    assert_eq!(m["size_bytes"], size);
    assert_eq!(m["checksum_sha256"], sha);
    assert_eq!(m["content_type"], "video/mp4");
    assert_eq!(m["url"], format!("{}/{public}", w.store.public_base_url));
    // The checked bytes are public, served as a download; the upload is gone.
    let served = w.head(&public).await.expect("the accepted video is public");
    assert_eq!(served.content_length(), Some(size as i64));
    assert_eq!(served.content_type(), Some("video/mp4"));
    assert_eq!(served.content_disposition(), Some("attachment"));
    assert!(w.head(&upload).await.is_none());
}

#[tokio::test]
async fn an_object_larger_than_declared_is_rejected_without_being_read() {
    let _one = ONE_AT_A_TIME.lock().await;
    let w = world().await;
    let declared = MIB;
    let item = w.grant("video/mp4", declared).await;
    let (upload, public) = w.keys(&item);
    // Bigger than the presigned PUT allows: put as a stray writer of the bucket would.
    let size = 64 * MIB;
    let (path, _) = video_file(size);
    w.put_file(&upload, &path, "video/mp4").await;

    // The processor reads S3 through a relay that counts what S3 sent it.
    let (endpoint, received) = counting_relay(&w.aws);
    let mut store = w.store.clone();
    store.s3 = aws_sdk_s3::Client::from_conf(w.store.s3.config().to_builder().endpoint_url(endpoint).build());
    let processor = Processor {
        db: w.processor.db.clone(),
        store,
    };
    let (out, growth) = measured(&processor, w.event(&upload)).await;
    let received = received.load(Ordering::Relaxed);
    println!(
        "rejecting {} MiB: peak memory growth {:.2} MiB, {:.2} MiB received from S3",
        size / MIB,
        growth as f64 / MIB as f64,
        received as f64 / MIB as f64
    );
    assert_eq!(
        out["processed"][0]["outcome"],
        format!("rejected: the upload is {size} bytes, not the {declared} declared"),
        "{out}"
    );
    // Not read: S3's answer said the size, and the body was left (socket buffers aside).
    assert!(received > 0, "the processor read S3 through the relay");
    assert!(received < size / 4, "{received} bytes of {size} came from S3");
    assert!(growth < 16 * MIB, "memory grew by {growth} bytes");
    let m = w.media(&item).await;
    assert_eq!(m["status"], "rejected");
    assert!(m["url"].is_null());
    assert!(w.head(&upload).await.is_none(), "the object is removed");
    assert!(w.head(&public).await.is_none(), "and never was public");
}
