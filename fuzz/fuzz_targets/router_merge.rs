//! The router and the fan-out merger: any request routes without panicking,
//! and merging any replies for a split multi-key command never panics and
//! yields exactly one complete reply frame.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use slotproxy::cluster::slot::SlotTable;
use slotproxy::command::fanout;
use slotproxy::command::router::Router;
use slotproxy::command::CommandTable;
use slotproxy::ops::slowlog::SlowLog;
use slotproxy::resp::{Limits, ReplyDecoder, RequestDecoder};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // First half: requests; second half: replies for the merge.
    let mid = data.len() / 2;
    let mut buf = BytesMut::from(&data[..mid]);
    let mut d = RequestDecoder::new(Limits::default());
    let slots = SlotTable::empty();
    let slowlog = SlowLog::new(Default::default(), 0);
    let router = Router {
        commands: CommandTable::builtin(),
        slots: &slots,
        allow_config_write: &|| false,
        slowlog: &slowlog,
    };
    let mut replies_buf = BytesMut::from(&data[mid..]);
    let mut rd = ReplyDecoder::new();
    while let Ok(Some(req)) = d.decode(&mut buf) {
        let _ = router.route(&req, &mut Vec::new());
        let name = String::from_utf8_lossy(req.arg(0)).to_ascii_lowercase();
        if let Some(plan) = fanout::split_by_slot(&name, &req) {
            let replies: Vec<_> = plan
                .parts
                .iter()
                .map(|_| match rd.decode(&mut replies_buf) {
                    Ok(Some(f)) => Ok(f),
                    _ => Ok(Bytes::from_static(b"*0\r\n")),
                })
                .collect();
            let merged = fanout::merge(&plan.command, plan.write, &plan.merge, &replies);
            // Exactly one complete frame (node frames pass through as they are).
            let mut m = BytesMut::from(&merged[..]);
            let frame = ReplyDecoder::new().decode(&mut m);
            assert!(
                matches!(frame, Ok(Some(_))) && m.is_empty(),
                "merged reply is one frame: {merged:?}"
            );
        }
    }
});
