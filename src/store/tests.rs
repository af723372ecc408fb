//! The store as downstream sessions read it: bounded reads, from segment files for a cursor
//! behind the memory tail and from the tail after that, adding up to exactly what was stored.

use super::*;
use bytes::Buf;

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
    let (writes, store, thread) = Store::open(StoreConfig {
        dir: dir.path().into(),
        fsync: Fsync::No,
        segment_size: 1 << 20,
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
