//! broker.v1.ObjectStore through the real server and the generated client,
//! against a real S3-protocol server.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::{BUCKET, TestBroker, binary_body, sha256};
use resource_broker::config::PayloadSigning;
use resource_broker::proto::{
    ByteRange, DeleteObjectRequest, GetObjectRequest, HeadObjectRequest, ListObjectsRequest,
    ObjectInfo, PutObjectHeader, PutObjectRequest, PutObjectResponse, get_object_response,
    object_store_client::ObjectStoreClient, put_object_request,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, transport::Channel};

type Client = ObjectStoreClient<Channel>;

fn header(key: &str, content_type: &str) -> PutObjectRequest {
    PutObjectRequest {
        part: Some(put_object_request::Part::Header(PutObjectHeader {
            bucket: String::new(),
            key: key.into(),
            content_type: content_type.into(),
            metadata: HashMap::from([("origin".to_string(), "test".to_string())]),
        })),
    }
}

fn chunk(bytes: &[u8]) -> PutObjectRequest {
    PutObjectRequest {
        part: Some(put_object_request::Part::Chunk(Bytes::copy_from_slice(
            bytes,
        ))),
    }
}

async fn put(
    client: &mut Client,
    key: &str,
    body: &[u8],
    chunk_size: usize,
) -> Result<PutObjectResponse, tonic::Status> {
    let mut messages = vec![header(key, "application/octet-stream")];
    messages.extend(body.chunks(chunk_size).map(chunk));
    client
        .put_object(futures::stream::iter(messages))
        .await
        .map(|r| r.into_inner())
}

/// Reads a whole GetObject stream: (info, body, largest chunk).
async fn get(
    client: &mut Client,
    key: &str,
    range: Option<ByteRange>,
) -> Result<(ObjectInfo, Vec<u8>, usize), tonic::Status> {
    let request = GetObjectRequest {
        bucket: String::new(),
        key: key.into(),
        range,
    };
    let mut stream = client.get_object(request).await?.into_inner();
    let info = match stream.message().await?.and_then(|m| m.part) {
        Some(get_object_response::Part::Info(info)) => info,
        other => panic!("first message must be the info, got {other:?}"),
    };
    let (mut body, mut largest) = (Vec::new(), 0);
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(get_object_response::Part::Chunk(chunk)) => {
                largest = largest.max(chunk.len());
                body.extend_from_slice(&chunk);
            }
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
    Ok((info, body, largest))
}

#[tokio::test]
async fn small_binary_object_round_trips_byte_exact() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    // Every byte value, including invalid UTF-8: the original server corrupted these.
    let body: Vec<u8> = (0..=255u8).cycle().take(1048).collect();

    let put = put(&mut client, "incoming/report.pdf", &body, 100)
        .await
        .unwrap();
    assert_eq!(put.key, "incoming/report.pdf");
    assert_eq!(put.size, 1048);
    assert!(
        !put.etag.is_empty() && !put.etag.contains('"'),
        "etag {:?}",
        put.etag
    );

    let (info, got, _) = get(&mut client, "incoming/report.pdf", None).await.unwrap();
    assert_eq!(got, body);
    assert_eq!(info.size, 1048);
    assert_eq!(info.etag, put.etag);

    let head = client
        .head_object(HeadObjectRequest {
            bucket: BUCKET.into(),
            key: "incoming/report.pdf".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.size, 1048);
    assert_eq!(head.content_type, "application/octet-stream");
    assert_eq!(
        head.metadata.get("origin").map(String::as_str),
        Some("test")
    );
    assert!(head.last_modified.is_some());
}

#[tokio::test]
async fn large_object_streams_in_bounded_chunks_through_multipart() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    // 12 MiB + 3 bytes: three 5 MiB parts, the last one short.
    let body = binary_body(12 * 1024 * 1024 + 3);

    let put = put(&mut client, "big/blob.bin", &body, 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(put.size, body.len() as i64);

    let (info, got, largest) = get(&mut client, "big/blob.bin", None).await.unwrap();
    assert_eq!(info.size, body.len() as i64);
    assert_eq!(sha256(&got), sha256(&body));
    assert!(
        largest <= 1024 * 1024,
        "a chunk of {largest} bytes exceeds 1 MiB"
    );
    assert!(broker.s3.pending_upload_files().is_empty());
}

#[tokio::test]
async fn range_reads_return_the_range_and_the_whole_size() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    let body = binary_body(3 * 1024 * 1024);
    put(&mut client, "ranged.bin", &body, 512 * 1024)
        .await
        .unwrap();

    let (info, got, _) = get(
        &mut client,
        "ranged.bin",
        Some(ByteRange {
            offset: 1000,
            length: 2_000_000,
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        info.size,
        body.len() as i64,
        "info.size is the whole object's size"
    );
    assert_eq!(got, &body[1000..2_001_000]);

    let (_, tail, _) = get(
        &mut client,
        "ranged.bin",
        Some(ByteRange {
            offset: 3 * 1024 * 1024 - 10,
            length: 0,
        }),
    )
    .await
    .unwrap();
    assert_eq!(tail, &body[body.len() - 10..]);

    let (_, whole, _) = get(
        &mut client,
        "ranged.bin",
        Some(ByteRange {
            offset: 0,
            length: 0,
        }),
    )
    .await
    .unwrap();
    assert_eq!(whole.len(), body.len());

    let past_end = get(
        &mut client,
        "ranged.bin",
        Some(ByteRange {
            offset: 5 * 1024 * 1024,
            length: 0,
        }),
    )
    .await;
    assert_eq!(past_end.unwrap_err().code(), Code::OutOfRange);

    let negative = get(
        &mut client,
        "ranged.bin",
        Some(ByteRange {
            offset: -1,
            length: 0,
        }),
    )
    .await;
    assert_eq!(negative.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn listing_pages_through_a_prefix() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    for i in 0..5 {
        put(
            &mut client,
            &format!("docs/{i}.txt"),
            format!("document {i}").as_bytes(),
            64,
        )
        .await
        .unwrap();
    }
    put(&mut client, "other/x.txt", b"x", 64).await.unwrap();

    let mut keys = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_objects(ListObjectsRequest {
                bucket: String::new(),
                prefix: "docs/".into(),
                max_keys: 2,
                continuation_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.objects.len() <= 2);
        for object in &page.objects {
            assert_eq!(object.size, 10, "{object:?}");
            assert!(object.last_modified.is_some());
        }
        keys.extend(page.objects.into_iter().map(|o| o.key));
        if page.next_continuation_token.is_empty() {
            break;
        }
        token = page.next_continuation_token;
    }
    assert_eq!(
        keys,
        [
            "docs/0.txt",
            "docs/1.txt",
            "docs/2.txt",
            "docs/3.txt",
            "docs/4.txt"
        ]
    );

    let too_many = client
        .list_objects(ListObjectsRequest {
            max_keys: 5000,
            ..Default::default()
        })
        .await;
    assert_eq!(too_many.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn delete_removes_and_tolerates_missing_keys() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    put(&mut client, "gone.txt", b"bye", 64).await.unwrap();
    client
        .delete_object(DeleteObjectRequest {
            bucket: String::new(),
            key: "gone.txt".into(),
        })
        .await
        .unwrap();
    let head = client
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "gone.txt".into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound);
    // S3 semantics: deleting a missing key succeeds.
    client
        .delete_object(DeleteObjectRequest {
            bucket: String::new(),
            key: "never-was.txt".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_input_gets_the_right_code() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    let head = |bucket: &str, key: &str| HeadObjectRequest {
        bucket: bucket.into(),
        key: key.into(),
    };

    let missing = client
        .head_object(head("", "no/such/key"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("no/such/key"),
        "{}",
        missing.message()
    );

    let get_missing = get(&mut client, "no/such/key", None).await.unwrap_err();
    assert_eq!(get_missing.code(), Code::NotFound);

    assert_eq!(
        client.head_object(head("", "")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let long_key = "k".repeat(1025);
    assert_eq!(
        client
            .head_object(head("", &long_key))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .head_object(head("", "line\nbreak"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .head_object(head("Not_A_Bucket!", "k"))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let no_bucket = client
        .head_object(head("no-such-bucket", "k"))
        .await
        .unwrap_err();
    assert_eq!(no_bucket.code(), Code::NotFound);
    let list_no_bucket = client
        .list_objects(ListObjectsRequest {
            bucket: "no-such-bucket".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(list_no_bucket.code(), Code::NotFound);
    assert!(list_no_bucket.message().contains("no-such-bucket"));

    let put_empty_key = put(&mut client, "", b"x", 1).await.unwrap_err();
    assert_eq!(put_empty_key.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn malformed_upload_streams_are_rejected_and_leave_nothing() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;

    let no_header = client
        .put_object(futures::stream::iter(vec![chunk(b"data")]))
        .await
        .unwrap_err();
    assert_eq!(no_header.code(), Code::InvalidArgument);

    let two_headers = vec![
        header("twice.txt", ""),
        chunk(b"a"),
        header("twice.txt", ""),
    ];
    let err = client
        .put_object(futures::stream::iter(two_headers))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let head = client
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "twice.txt".into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound);

    // After multipart parts went up, a second header or a chunk larger
    // than a message may be: the upload is aborted.
    let err = rejected_after_parts(&broker, &mut client, header("twice-big.bin", "")).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    let err =
        rejected_after_parts(&broker, &mut client, chunk(&binary_body(5 * 1024 * 1024))).await;
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.message().contains("too large"), "{err}");
}

/// Uploads a header and 6 MiB of chunks (a multipart upload under way),
/// then `last`; returns the error, once the upload left no object and no
/// parts behind.
async fn rejected_after_parts(
    broker: &TestBroker,
    client: &mut Client,
    last: PutObjectRequest,
) -> tonic::Status {
    let key = "rejected-after-parts.bin";
    let mut messages = vec![header(key, "")];
    messages.extend(binary_body(6 * 1024 * 1024).chunks(1024 * 1024).map(chunk));
    messages.push(last);
    let err = client
        .put_object(futures::stream::iter(messages))
        .await
        .unwrap_err();
    wait_until_no_pending_uploads(broker).await;
    let head = client
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: key.into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound, "after {err}");
    err
}

/// An upload whose body ends part way through a message (a client that
/// breaks gRPC's framing; tonic's clients cannot send one) is aborted: the
/// broker reads it with its own decoder, not tonic's.
#[tokio::test]
async fn an_upload_ending_part_way_through_a_message_leaves_nothing() {
    let broker = TestBroker::start().await;
    let tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut sender = sender.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{}/broker.v1.ObjectStore/PutObject",
        broker.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (answer, mut body) = sender.send_request(request, false).unwrap();
    let framed = |message: PutObjectRequest| resource_broker::codec::frame(&message);
    let key = "cut-in-a-message.bin";
    let mut sent = framed(header(key, "")).to_vec();
    // 6 MiB: a multipart upload under way.
    for piece in binary_body(6 * 1024 * 1024).chunks(1024 * 1024) {
        sent.extend(framed(chunk(piece)));
    }
    let last = framed(chunk(&binary_body(1000)));
    sent.extend_from_slice(&last[..last.len() / 2]);
    body.send_data(Bytes::from(sent), true).unwrap();

    let answer = answer.await.unwrap();
    let headers = answer.headers().clone();
    let mut answer = answer.into_body();
    while answer.data().await.is_some() {}
    let trailers = answer.trailers().await.unwrap().unwrap_or(headers);
    assert_eq!(trailers["grpc-status"], "1", "CANCELLED: {trailers:?}");
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(message.contains("part%20way"), "{message}");

    wait_until_no_pending_uploads(&broker).await;
    let head = broker
        .object_store()
        .await
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: key.into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn cancelled_upload_leaves_no_object_and_no_parts() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<PutObjectRequest>(4);
    let upload = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .put_object(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        }
    });
    tx.send(header("cancelled.bin", "")).await.unwrap();
    let body = binary_body(7 * 1024 * 1024);
    for piece in body.chunks(1024 * 1024) {
        tx.send(chunk(piece)).await.unwrap();
    }
    // Let the first 5 MiB part reach S3, then the client goes away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.s3.pending_upload_files().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "multipart upload never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upload.abort();
    drop(tx);
    let _ = upload.await;

    wait_until_no_pending_uploads(&broker).await;
    let head = client
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "cancelled.bin".into(),
        })
        .await;
    assert_eq!(head.unwrap_err().code(), Code::NotFound);
}

async fn wait_until_no_pending_uploads(broker: &TestBroker) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pending = broker.s3.pending_upload_files();
        if pending.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "multipart upload not aborted: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn empty_objects_work() {
    let broker = TestBroker::start().await;
    let mut client = broker.object_store().await;
    let put = put(&mut client, "empty", b"", 1).await.unwrap();
    assert_eq!(put.size, 0);
    let (info, body, _) = get(&mut client, "empty", None).await.unwrap();
    assert_eq!((info.size, body.len()), (0, 0));
    // Concurrent readers each get their own stream.
    let reads = futures::future::join_all((0..4).map(|_| {
        let mut client = client.clone();
        async move { get(&mut client, "empty", None).await.map(|r| r.1.len()) }
    }))
    .await;
    assert!(reads.into_iter().all(|r| r.unwrap() == 0));
}

#[tokio::test]
async fn missing_keys_never_open_the_breaker() {
    let broker = TestBroker::start_with(|config| config.resilience.breaker_failures = 2).await;
    let mut client = broker.object_store().await;
    for _ in 0..10 {
        let head = client
            .head_object(HeadObjectRequest {
                bucket: String::new(),
                key: "missing".into(),
            })
            .await;
        assert_eq!(head.unwrap_err().code(), Code::NotFound);
    }
    put(&mut client, "present", b"x", 1).await.unwrap();
    client
        .head_object(HeadObjectRequest {
            bucket: String::new(),
            key: "present".into(),
        })
        .await
        .expect("S3 is still called");
    let metrics = broker.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"broker_circuit_breaker_state{backend="s3"} 0"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn uploads_in_progress_at_shutdown_are_aborted() {
    let (db, s3) = (
        common::TestDatabase::create().await,
        common::TestS3::start().await,
    );
    let mut config = common::test_config(&db, &s3);
    config.drain_timeout = Duration::from_millis(500);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(resource_broker::server::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = loop {
        match Channel::from_shared(url.clone()).unwrap().connect().await {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<PutObjectRequest>(4);
    let upload = tokio::spawn(async move {
        ObjectStoreClient::new(channel)
            .put_object(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(header("unfinished.bin", "")).await.unwrap();
    for piece in binary_body(6 * 1024 * 1024).chunks(1024 * 1024) {
        tx.send(chunk(piece)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s3.pending_upload_files().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "multipart upload never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client keeps its stream open past the drain.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(s3.pending_upload_files(), Vec::<String>::new());
    drop(tx);
    let _ = upload.await;
}

/// Starts a broker whose S3 traffic goes through a loopback relay that keeps
/// every byte the broker sends, with `signing` for uploads' bodies.
async fn start_recording(signing: PayloadSigning) -> (TestBroker, Arc<Mutex<Vec<u8>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let recorded = sent.clone();
    let broker = TestBroker::start_with(move |config| {
        let target = config.s3.s3_endpoint_url.clone().unwrap();
        let target = target.trim_start_matches("http://").to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        config.s3.s3_endpoint_url = Some(format!("http://{}", listener.local_addr().unwrap()));
        config.s3.payload_signing = signing;
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move {
            while let Ok((mut from_broker, _)) = listener.accept().await {
                let mut to_s3 = tokio::net::TcpStream::connect(&target).await.unwrap();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let (mut broker_read, mut broker_write) = from_broker.split();
                    let (mut s3_read, mut s3_write) = to_s3.split();
                    let upstream = async {
                        let mut buffer = vec![0; 64 * 1024];
                        loop {
                            let n = broker_read.read(&mut buffer).await?;
                            if n == 0 {
                                return s3_write.shutdown().await;
                            }
                            recorded.lock().unwrap().extend_from_slice(&buffer[..n]);
                            s3_write.write_all(&buffer[..n]).await?;
                        }
                    };
                    let downstream = tokio::io::copy(&mut s3_read, &mut broker_write);
                    let _ = tokio::try_join!(upstream, downstream);
                });
            }
        });
    })
    .await;
    (broker, sent)
}

/// (uploads' requests, those whose body was sent as UNSIGNED-PAYLOAD).
fn uploads_and_unsigned(sent: &[u8]) -> (usize, usize) {
    let count = |needle: &[u8]| sent.windows(needle.len()).filter(|w| *w == needle).count();
    (
        count(b"PUT /"),
        count(b"x-amz-content-sha256: UNSIGNED-PAYLOAD"),
    )
}

#[tokio::test]
async fn upload_bodies_are_signed_as_configured() {
    // 1 MiB goes in one PutObject, 12 MiB + 3 bytes in three parts.
    let (small, large) = (binary_body(1024 * 1024), binary_body(12 * 1024 * 1024 + 3));
    for (signing, signed) in [
        (PayloadSigning::Never, false),
        // `auto` signs over plain HTTP: nothing else protects the body.
        (PayloadSigning::Auto, true),
        (PayloadSigning::Always, true),
    ] {
        let (broker, sent) = start_recording(signing).await;
        let mut client = broker.object_store().await;
        for (key, body) in [("signing/small", &small), ("signing/large", &large)] {
            let put = put(&mut client, key, body, 256 * 1024).await.unwrap();
            assert_eq!(put.size, body.len() as i64);
            let (_, got, _) = get(&mut client, key, None).await.unwrap();
            assert_eq!(sha256(&got), sha256(body), "{signing:?}: {key} round trips");
        }
        let (uploads, unsigned) = uploads_and_unsigned(&sent.lock().unwrap());
        assert_eq!(
            uploads, 4,
            "{signing:?}: one PutObject and three UploadParts"
        );
        let expected = if signed { 0 } else { uploads };
        assert_eq!(unsigned, expected, "{signing:?}: bodies sent unsigned");
    }
}
