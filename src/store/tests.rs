//! The store as downstream sessions read it: bounded reads, from segment files for a cursor
//! behind the memory tail and from the tail after that, adding up to exactly what was stored.

use super::*;
use bytes::Buf;
use std::time::Duration;

use crate::decode::tiny_rdb;

fn set_command(i: usize) -> Vec<u8> {
    let value = vec![b'a' + (i % 26) as u8; 4000];
    let mut cmd = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", value.len()).into_bytes();
    cmd.extend_from_slice(&value);
    cmd.extend_from_slice(b"\r\n");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_bounded_and_add_up_from_disk_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (writes, store, thread) = store_with_snapshot(dir.path(), Fsync::No, 1 << 20).await;
    let mut written = Vec::new();
    for i in 0..(2 * TAIL_BYTES / 4000) {
        let cmd = set_command(i);
        written.extend_from_slice(&cmd);
        writes.append(cmd.into()).await.unwrap();
    }
    let end = writes.flush().await.unwrap();
    assert_eq!(end, 1001 + written.len() as u64);

    let epoch = store.view().epoch;
    let mut changes = store.subscribe();
    let mut scratch = BytesMut::new();
    let mut read = Vec::new();
    while 1001 + (read.len() as u64) < end {
        let from = 1001 + read.len() as u64;
        let mut chunks = store
            .read(from, epoch, &mut changes, &mut scratch)
            .await
            .unwrap();
        assert!(
            chunks.remaining() as u64 <= READ_MAX,
            "one read stays bounded"
        );
        read.extend_from_slice(&chunks.copy_to_bytes(chunks.remaining()));
    }
    assert!(read == written, "the reads add up to the stored stream");
    assert!(
        scratch.capacity() == 0,
        "the disk buffer is released back on the tail"
    );
    writes.close().await.unwrap();
    thread.join().unwrap();
}

/// A store with a tiny snapshot at offset 1000 in service: its log starts at 1001.
async fn store_with_snapshot(
    dir: &Path,
    fsync: Fsync,
    segment_size: u64,
) -> (StoreWriter, Store, std::thread::JoinHandle<()>) {
    let (writes, store, thread) = Store::open(StoreConfig {
        dir: dir.into(),
        fsync,
        segment_size,
        backlog_size: 64 << 20,
        restore: Default::default(),
        metrics: StoreMetrics::new(),
    })
    .unwrap();
    let replid = "8e1cf1a49d4e3a2a3fa8c4a7a4b6b2e0c4d5e6f7".to_string();
    writes
        .begin_snapshot(Slot::Main, replid, 1000)
        .await
        .unwrap();
    writes
        .snapshot_data(Slot::Main, tiny_rdb(true).into())
        .await
        .unwrap();
    writes.finish_snapshot(Slot::Main).await.unwrap();
    // The writer publishes the ACK offset after the batch of operations the finish was in: a
    // test that holds the writer right away would otherwise hold it before that.
    let mut status = writes.writer_status();
    status.wait_for(|s| s.ack.is_some()).await.unwrap();
    (writes, store, thread)
}

fn log_bytes(dir: &Path) -> u64 {
    let segs = std::fs::read_dir(dir.join("log")).unwrap();
    segs.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_everysec_the_stream_reaches_readers_before_the_disk_and_the_ack_after() {
    let dir = tempfile::tempdir().unwrap();
    let (writes, store, _) = store_with_snapshot(dir.path(), Fsync::Everysec, 64 << 20).await;
    let start = 1001;
    let go = writes.hold().await;
    let cmd = set_command(0);
    let mut chunk = cmd.clone();
    chunk.extend_from_slice(&cmd[..100]);
    writes.append(chunk.into()).await.unwrap();

    let (epoch, mut changes, mut scratch) =
        (store.view().epoch, store.subscribe(), BytesMut::new());
    let read = store.read(start, epoch, &mut changes, &mut scratch);
    let mut read = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("forwarded while the writer is held")
        .unwrap();
    let read = read.copy_to_bytes(read.remaining());
    assert_eq!(
        read, cmd,
        "the whole command is forwarded, not the half one after it"
    );
    assert_eq!(
        log_bytes(dir.path()),
        0,
        "the writer has written nothing yet"
    );
    let ack = writes.writer_status().borrow().ack;
    assert_eq!(
        ack,
        Some(start - 1),
        "nothing is acknowledged before it is stored"
    );

    go.send(()).unwrap();
    let end = writes.flush().await.unwrap();
    assert_eq!(end, start + cmd.len() as u64, "the half command is cut");
    assert_eq!(writes.writer_status().borrow().ack, Some(end - 1));
    assert_eq!(log_bytes(dir.path()), cmd.len() as u64);
    writes.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_always_nothing_reaches_readers_before_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (writes, store, _) = store_with_snapshot(dir.path(), Fsync::Always, 64 << 20).await;
    let start = 1001;
    let go = writes.hold().await;
    writes.append(set_command(0).into()).await.unwrap();
    assert_eq!(store.next(), start, "a held writer has published nothing");
    go.send(()).unwrap();
    let end = writes.flush().await.unwrap();
    assert_eq!(store.next(), end);
    assert!(end > start);
    writes.close().await.unwrap();
}

/// A reader behind the memory tail whose bytes were forwarded but not yet written waits for
/// the writer, and the writer wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_tail_waits_for_the_disk_and_is_woken() {
    let dir = tempfile::tempdir().unwrap();
    let (writes, store, _) = store_with_snapshot(dir.path(), Fsync::Everysec, 64 << 20).await;
    let start = 1001;
    let go = writes.hold().await;
    let mut written = Vec::new();
    while written.len() < TAIL_BYTES + (1 << 20) {
        let chunk: Vec<u8> = (0..16).flat_map(set_command).collect();
        written.extend_from_slice(&chunk);
        writes.append(chunk.into()).await.unwrap();
    }
    assert_eq!(store.next(), start + written.len() as u64, "all forwarded");
    let reader = store.clone();
    let read = tokio::spawn(async move {
        let (epoch, mut changes) = (reader.view().epoch, reader.subscribe());
        let mut chunks = reader
            .read(start, epoch, &mut changes, &mut BytesMut::new())
            .await
            .unwrap();
        chunks.copy_to_bytes(chunks.remaining())
    });
    // The tail moved past `start` before anything reached the disk: the reader waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !store.shared.disk_wait.load(Ordering::Acquire) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader never waited"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(log_bytes(dir.path()), 0);
    go.send(()).unwrap();
    let read = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the writer woke the reader waiting for the disk")
        .unwrap();
    assert!(!read.is_empty() && written.starts_with(&read));
    writes.close().await.unwrap();
}
