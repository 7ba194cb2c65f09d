//! Prometheus metrics of the control service: the bridge's cumulative counters mirrored from
//! its once-a-second stats snapshot, gauges of the last sampling period, and the events and
//! state the control service itself sees. Exposed in the Prometheus text format.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use viaduct_bridge::command::protocol::{Drops, StatsSnapshot, WorkerStats};

/// Content type of [`Metrics::encode`]: the Prometheus text format 0.0.4, which every
/// Prometheus scrapes and `promtool check metrics` validates.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the DTLS handshake histogram: 1 ms to 10 s.
pub const HANDSHAKE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The figures the control service computes each sampling period (rates are over the last period).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// The bridge's stats snapshot (cumulative counters since the bridge started).
    pub snapshot: StatsSnapshot,
    /// Bits per second received over the last period.
    pub incoming_bits_per_second: f64,
    /// Bits per second sent over the last period.
    pub outgoing_bits_per_second: f64,
    /// Packets per second received over the last period.
    pub incoming_packets_per_second: f64,
    /// Packets per second sent over the last period.
    pub outgoing_packets_per_second: f64,
    /// Load: 0 idle, 1 full, may exceed 1.
    pub stress: f64,
    /// Load per worker index.
    pub worker_stress: Vec<f64>,
    /// Endpoints that sent audio over the last period.
    pub endpoints_sending_audio: u64,
    /// Endpoints that sent video over the last period.
    pub endpoints_sending_video: u64,
    /// Endpoints that sent nothing over the last period.
    pub inactive_endpoints: u64,
    /// Endpoints in the largest conference.
    pub largest_conference: u64,
    /// Share of the RTP packets the senders' sequence numbers say were sent to the
    /// bridge over the last period that never arrived (0..=1).
    pub incoming_loss: f64,
    /// Mean fraction lost in the receivers' reception reports over the last period
    /// (what they miss of what the bridge forwards, end to end) (0..=1).
    pub outgoing_loss: f64,
    /// Mean round trip between the bridge and its endpoints, in seconds, over the last
    /// period in which any reception report named a sender report the bridge forwarded
    /// (RFC 3550 LSR/DLSR); 0 before any did, or with no endpoints.
    pub rtt_seconds: f64,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;
type PerWorker<M> = Family<WorkerLabels, M>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

impl WorkerLabels {
    fn new(worker: usize) -> Self {
        WorkerLabels {
            worker: worker.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    worker: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// What [`Metrics::observe`] remembers between samples.
#[derive(Debug, Default)]
struct State {
    /// The previous snapshot, without its per-endpoint stats.
    previous: Option<StatsSnapshot>,
    /// The backend label currently set on `viaduct_io_backend_info`.
    io_backend: Option<String>,
    /// Worker labels currently set on the per-worker gauges.
    workers: BTreeSet<String>,
}

/// Reads one cumulative per-worker counter (drops aside) from a snapshot.
type ReadCounter = fn(&WorkerStats) -> u64;

/// A per-worker counter family and how to read its cumulative value from a snapshot.
type WorkerCounter<'a> = (&'a PerWorker<Counter>, ReadCounter);

/// The per-worker counters other than drops, in the order of `Metrics::worker_counters`.
const WORKER_COUNTERS: [ReadCounter; 10] = [
    |w| w.counters.packets_in,
    |w| w.counters.packets_out,
    |w| w.counters.bytes_in,
    |w| w.counters.bytes_out,
    |w| w.counters.rtp_in,
    |w| w.counters.rtcp_in,
    |w| w.counters.audio_in,
    |w| w.counters.video_in,
    |w| w.loop_turns,
    |w| w.syscalls,
];

/// The control service's Prometheus registry and the metrics in it. `Send + Sync`: every
/// method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    state: Mutex<State>,

    io_backend_info: Family<BackendLabels, Gauge>,

    conferences: Gauge,
    endpoints: Gauge,
    connected_endpoints: Gauge,
    worker_conferences: PerWorker<Gauge>,
    worker_endpoints: PerWorker<Gauge>,
    worker_connected_endpoints: PerWorker<Gauge>,

    packets_received: PerWorker<Counter>,
    packets_sent: PerWorker<Counter>,
    received_bytes: PerWorker<Counter>,
    sent_bytes: PerWorker<Counter>,
    rtp_packets_received: PerWorker<Counter>,
    rtcp_packets_received: PerWorker<Counter>,
    audio_packets_received: PerWorker<Counter>,
    video_packets_received: PerWorker<Counter>,
    loop_turns: PerWorker<Counter>,
    syscalls: PerWorker<Counter>,
    dropped_packets: Family<DropLabels, Counter>,
    dtls_handshakes: Family<ResultLabels, Counter>,

    incoming_bytes_per_second: FloatGauge,
    outgoing_bytes_per_second: FloatGauge,
    incoming_packets_per_second: FloatGauge,
    outgoing_packets_per_second: FloatGauge,
    loss_ratio: Family<DirectionLabels, FloatGauge>,
    rtt_seconds: FloatGauge,
    stress_ratio: FloatGauge,
    worker_stress_ratio: PerWorker<FloatGauge>,
    endpoints_sending_audio: Gauge,
    endpoints_sending_video: Gauge,
    inactive_endpoints: Gauge,
    largest_conference_endpoints: Gauge,

    ice_succeeded: Counter,
    ice_failed: Counter,
    dtls_failed: Counter,
    handshake_seconds: Histogram,
    conferences_created: Counter,
    conferences_completed: Counter,
    conference_seconds: FloatCounter,

    bridge_link_up: Gauge,
    bridge_link_reconnects: Counter,
    healthy: Gauge,
    drain: Gauge,
    graceful_shutdown: Gauge,
    shutting_down: Gauge,
    signalling_connections: Gauge,
    signalling_refused: Family<ReasonLabels, Counter>,
    signalling_dropped: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Registers every metric under the `viaduct` prefix; `viaduct_build_info{version}` is 1.
    pub fn new(version: &str) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("viaduct"),
            state: Mutex::new(State::default()),
            io_backend_info: Family::default(),
            conferences: Gauge::default(),
            endpoints: Gauge::default(),
            connected_endpoints: Gauge::default(),
            worker_conferences: Family::default(),
            worker_endpoints: Family::default(),
            worker_connected_endpoints: Family::default(),
            packets_received: Family::default(),
            packets_sent: Family::default(),
            received_bytes: Family::default(),
            sent_bytes: Family::default(),
            rtp_packets_received: Family::default(),
            rtcp_packets_received: Family::default(),
            audio_packets_received: Family::default(),
            video_packets_received: Family::default(),
            loop_turns: Family::default(),
            syscalls: Family::default(),
            dropped_packets: Family::default(),
            dtls_handshakes: Family::default(),
            incoming_bytes_per_second: FloatGauge::default(),
            outgoing_bytes_per_second: FloatGauge::default(),
            incoming_packets_per_second: FloatGauge::default(),
            outgoing_packets_per_second: FloatGauge::default(),
            loss_ratio: Family::default(),
            rtt_seconds: FloatGauge::default(),
            stress_ratio: FloatGauge::default(),
            worker_stress_ratio: Family::default(),
            endpoints_sending_audio: Gauge::default(),
            endpoints_sending_video: Gauge::default(),
            inactive_endpoints: Gauge::default(),
            largest_conference_endpoints: Gauge::default(),
            ice_succeeded: Counter::default(),
            ice_failed: Counter::default(),
            dtls_failed: Counter::default(),
            handshake_seconds: Histogram::new(HANDSHAKE_BUCKETS),
            conferences_created: Counter::default(),
            conferences_completed: Counter::default(),
            conference_seconds: FloatCounter::default(),
            bridge_link_up: Gauge::default(),
            bridge_link_reconnects: Counter::default(),
            healthy: Gauge::default(),
            drain: Gauge::default(),
            graceful_shutdown: Gauge::default(),
            shutting_down: Gauge::default(),
            signalling_connections: Gauge::default(),
            signalling_refused: Family::default(),
            signalling_dropped: Family::default(),
        };

        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: label_value(version),
            })
            .set(1);
        let r = &mut m.registry;
        r.register(
            "build_info",
            "Version of the control service; always 1",
            build_info,
        );
        r.register(
            "io_backend_info",
            "I/O backend of the bridge workers (uring or mmsg); always 1",
            m.io_backend_info.clone(),
        );

        // Gauges of the bridge's state.
        r.register(
            "conferences",
            "Conferences on the bridge",
            m.conferences.clone(),
        );
        r.register("endpoints", "Endpoints on the bridge", m.endpoints.clone());
        r.register(
            "connected_endpoints",
            "Endpoints with ICE and DTLS done",
            m.connected_endpoints.clone(),
        );
        r.register(
            "worker_conferences",
            "Conferences placed on a worker",
            m.worker_conferences.clone(),
        );
        r.register(
            "worker_endpoints",
            "Endpoints on a worker",
            m.worker_endpoints.clone(),
        );
        r.register(
            "worker_connected_endpoints",
            "Endpoints on a worker with ICE and DTLS done",
            m.worker_connected_endpoints.clone(),
        );

        // The bridge's counters (prometheus-client appends `_total`).
        r.register(
            "packets_received",
            "Datagrams received by a worker",
            m.packets_received.clone(),
        );
        r.register(
            "packets_sent",
            "Datagrams sent by a worker",
            m.packets_sent.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of datagrams received by a worker",
            m.received_bytes.clone(),
        );
        r.register(
            "sent_bytes",
            "Bytes of datagrams sent by a worker",
            m.sent_bytes.clone(),
        );
        r.register(
            "rtp_packets_received",
            "RTP packets received and authenticated by a worker",
            m.rtp_packets_received.clone(),
        );
        r.register(
            "rtcp_packets_received",
            "RTCP packets received and authenticated by a worker",
            m.rtcp_packets_received.clone(),
        );
        r.register(
            "audio_packets_received",
            "RTP packets a worker received on SSRCs declared as audio",
            m.audio_packets_received.clone(),
        );
        r.register(
            "video_packets_received",
            "RTP packets a worker received on SSRCs declared as video",
            m.video_packets_received.clone(),
        );
        r.register(
            "dropped_packets",
            "Datagrams a worker dropped, by reason",
            m.dropped_packets.clone(),
        );
        r.register(
            "loop_turns",
            "Event loop turns of a worker",
            m.loop_turns.clone(),
        );
        r.register(
            "syscalls",
            "System calls a worker's I/O backend made",
            m.syscalls.clone(),
        );
        r.register(
            "dtls_handshakes",
            "DTLS handshakes the bridge finished, by result (from the bridge's counters)",
            m.dtls_handshakes.clone(),
        );

        // Figures of the last sampling period.
        r.register(
            "incoming_bytes_per_second",
            "Bytes per second received over the last sampling period",
            m.incoming_bytes_per_second.clone(),
        );
        r.register(
            "outgoing_bytes_per_second",
            "Bytes per second sent over the last sampling period",
            m.outgoing_bytes_per_second.clone(),
        );
        r.register(
            "incoming_packets_per_second",
            "Packet rate received over the last sampling period",
            m.incoming_packets_per_second.clone(),
        );
        r.register(
            "outgoing_packets_per_second",
            "Packet rate sent over the last sampling period",
            m.outgoing_packets_per_second.clone(),
        );
        r.register(
            "loss_ratio",
            "Packet loss ratio over the last sampling period: incoming from the senders' RTP sequence numbers, outgoing from the receivers' reception reports",
            m.loss_ratio.clone(),
        );
        r.register(
            "rtt_seconds",
            "Mean round-trip time between the bridge and its endpoints, over the last sampling period in which reception reports named a sender report the bridge forwarded (RFC 3550 LSR/DLSR); 0 before any did",
            m.rtt_seconds.clone(),
        );
        r.register(
            "stress_ratio",
            "Load of the bridge: 0 idle, 1 full, may exceed 1",
            m.stress_ratio.clone(),
        );
        r.register(
            "worker_stress_ratio",
            "Load of a worker: 0 idle, 1 full, may exceed 1",
            m.worker_stress_ratio.clone(),
        );
        r.register(
            "endpoints_sending_audio",
            "Endpoints that sent audio over the last sampling period",
            m.endpoints_sending_audio.clone(),
        );
        r.register(
            "endpoints_sending_video",
            "Endpoints that sent video over the last sampling period",
            m.endpoints_sending_video.clone(),
        );
        r.register(
            "inactive_endpoints",
            "Endpoints that sent nothing over the last sampling period",
            m.inactive_endpoints.clone(),
        );
        r.register(
            "largest_conference_endpoints",
            "Endpoints in the largest conference",
            m.largest_conference_endpoints.clone(),
        );

        // Events.
        r.register(
            "ice_succeeded",
            "Endpoints that connected (ICE and DTLS done)",
            m.ice_succeeded.clone(),
        );
        r.register(
            "ice_failed",
            "Endpoints whose ICE timed out",
            m.ice_failed.clone(),
        );
        r.register(
            "dtls_failed",
            "Endpoints that failed for another reason than ICE (DTLS)",
            m.dtls_failed.clone(),
        );
        r.register(
            "dtls_handshake_duration_seconds",
            "Time from a DTLS handshake's start to its end",
            m.handshake_seconds.clone(),
        );
        r.register(
            "conferences_created",
            "Conferences created",
            m.conferences_created.clone(),
        );
        r.register(
            "conferences_completed",
            "Conferences that expired",
            m.conferences_completed.clone(),
        );
        r.register(
            "conference_seconds",
            "Summed lifetime of the conferences that expired",
            m.conference_seconds.clone(),
        );

        // The control service's own state.
        r.register(
            "bridge_link_up",
            "1 when the control service is connected to the bridge",
            m.bridge_link_up.clone(),
        );
        r.register(
            "bridge_link_reconnects",
            "Times the link to the bridge was established again after a loss",
            m.bridge_link_reconnects.clone(),
        );
        r.register(
            "healthy",
            "1 when the service is healthy",
            m.healthy.clone(),
        );
        r.register(
            "drain",
            "1 when draining: no new conferences",
            m.drain.clone(),
        );
        r.register(
            "graceful_shutdown",
            "1 when a graceful shutdown is under way",
            m.graceful_shutdown.clone(),
        );
        r.register(
            "shutting_down",
            "1 when the service is shutting down",
            m.shutting_down.clone(),
        );

        // Participants' signalling.
        r.register(
            "signalling_connections",
            "Open participant WebSocket connections",
            m.signalling_connections.clone(),
        );
        r.register(
            "signalling_refused",
            "Participant connections refused before the WebSocket upgrade, by reason",
            m.signalling_refused.clone(),
        );
        r.register(
            "signalling_messages_dropped",
            "Participant messages refused, by reason",
            m.signalling_dropped.clone(),
        );

        // Series that exist from the start, at 0.
        for direction in ["incoming", "outgoing"] {
            m.loss_ratio
                .get_or_create(&DirectionLabels { direction })
                .set(0.0);
        }
        for result in ["succeeded", "failed"] {
            m.dtls_handshakes
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }

        m
    }

    /// Applies one sample: gauges are set; the bridge's counters advance by the delta from the
    /// previous snapshot, or by the new value when the bridge restarted (any counter went back).
    pub fn observe(&self, sample: &Sample) {
        let snap = &sample.snapshot;
        let mut state = self.lock();

        let restarted = state
            .previous
            .as_ref()
            .is_some_and(|prev| went_backwards(prev, snap));
        if restarted {
            tracing::info!("bridge counters went backwards: the bridge restarted");
        }
        let previous = if restarted {
            None
        } else {
            state.previous.as_ref()
        };

        // Counters.
        for w in &snap.workers {
            let labels = WorkerLabels::new(w.worker);
            let before = previous.and_then(|p| p.workers.iter().find(|b| b.worker == w.worker));
            for (family, get) in self.worker_counters() {
                let old = before.map_or(0, get);
                family.get_or_create(&labels).inc_by(advance(old, get(w)));
            }
            let old_drops = before.map(|b| drops_by_reason(&b.counters.drops));
            for (reason, new) in drops_by_reason(&w.counters.drops) {
                let old = old_drops
                    .as_ref()
                    .and_then(|d| d.get(&reason).copied())
                    .unwrap_or(0);
                let labels = DropLabels {
                    worker: labels.worker.clone(),
                    reason,
                };
                self.dropped_packets
                    .get_or_create(&labels)
                    .inc_by(advance(old, new));
            }
        }
        let (old_ok, old_failed) = previous.map_or((0, 0), |p| (p.dtls_succeeded, p.dtls_failed));
        self.dtls_handshakes
            .get_or_create(&ResultLabels {
                result: "succeeded",
            })
            .inc_by(advance(old_ok, snap.dtls_succeeded));
        self.dtls_handshakes
            .get_or_create(&ResultLabels { result: "failed" })
            .inc_by(advance(old_failed, snap.dtls_failed));

        // Gauges of the bridge's state.
        self.conferences.set(int(snap.conferences));
        self.endpoints.set(int(snap.endpoints));
        let connected: usize = snap.workers.iter().map(|w| w.connected_endpoints).sum();
        self.connected_endpoints.set(int(connected));
        let mut workers = BTreeSet::new();
        for w in &snap.workers {
            let labels = WorkerLabels::new(w.worker);
            self.worker_conferences
                .get_or_create(&labels)
                .set(int(w.conferences));
            self.worker_endpoints
                .get_or_create(&labels)
                .set(int(w.endpoints));
            self.worker_connected_endpoints
                .get_or_create(&labels)
                .set(int(w.connected_endpoints));
            workers.insert(labels.worker);
        }
        for (i, stress) in sample.worker_stress.iter().enumerate() {
            let labels = WorkerLabels::new(i);
            self.worker_stress_ratio.get_or_create(&labels).set(*stress);
            workers.insert(labels.worker);
        }
        for gone in state.workers.difference(&workers) {
            let labels = WorkerLabels {
                worker: gone.clone(),
            };
            self.worker_conferences.remove(&labels);
            self.worker_endpoints.remove(&labels);
            self.worker_connected_endpoints.remove(&labels);
            self.worker_stress_ratio.remove(&labels);
        }
        state.workers = workers;

        if !snap.io_backend.is_empty() {
            let backend = label_value(&snap.io_backend);
            if state.io_backend.as_deref() != Some(backend.as_str()) {
                if let Some(old) = state.io_backend.take() {
                    self.io_backend_info.remove(&BackendLabels { backend: old });
                }
                self.io_backend_info
                    .get_or_create(&BackendLabels {
                        backend: backend.clone(),
                    })
                    .set(1);
                state.io_backend = Some(backend);
            }
        }

        // Figures of the period.
        self.incoming_bytes_per_second
            .set(sample.incoming_bits_per_second / 8.0);
        self.outgoing_bytes_per_second
            .set(sample.outgoing_bits_per_second / 8.0);
        self.incoming_packets_per_second
            .set(sample.incoming_packets_per_second);
        self.outgoing_packets_per_second
            .set(sample.outgoing_packets_per_second);
        self.stress_ratio.set(sample.stress);
        self.loss_ratio
            .get_or_create(&DirectionLabels {
                direction: "incoming",
            })
            .set(sample.incoming_loss);
        self.loss_ratio
            .get_or_create(&DirectionLabels {
                direction: "outgoing",
            })
            .set(sample.outgoing_loss);
        self.rtt_seconds.set(sample.rtt_seconds);
        self.endpoints_sending_audio
            .set(int(sample.endpoints_sending_audio));
        self.endpoints_sending_video
            .set(int(sample.endpoints_sending_video));
        self.inactive_endpoints.set(int(sample.inactive_endpoints));
        self.largest_conference_endpoints
            .set(int(sample.largest_conference));

        let mut keep = snap.clone();
        keep.endpoint_stats = Vec::new();
        state.previous = Some(keep);
    }

    /// The bridge link went up or down.
    pub fn set_link_up(&self, up: bool) {
        self.bridge_link_up.set(i64::from(up));
    }

    /// The bridge link was established again after a loss.
    pub fn link_reconnected(&self) {
        self.bridge_link_reconnects.inc();
    }

    /// A DTLS handshake finished after `ms` milliseconds (from the endpoint-connected event).
    pub fn observe_handshake(&self, ms: u64) {
        self.handshake_seconds.observe(ms as f64 / 1000.0);
    }

    /// An endpoint connected: ICE (and DTLS) succeeded.
    pub fn endpoint_connected(&self) {
        self.ice_succeeded.inc();
    }

    /// An endpoint failed: `ice-timeout` counts as ICE failed, anything else as DTLS failed.
    pub fn endpoint_failed(&self, reason: &str) {
        if reason == "ice-timeout" {
            self.ice_failed.inc();
        } else {
            self.dtls_failed.inc();
        }
    }

    /// A participant connection opened (`1`) or closed (`-1`).
    pub fn signalling_connection(&self, delta: i64) {
        self.signalling_connections.inc_by(delta);
    }

    /// A participant connection was refused (bad token, wrong room...).
    pub fn signalling_refused(&self, reason: &str) {
        self.signalling_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A participant message was refused (malformed, too large, rate-limited...).
    pub fn signalling_dropped(&self, reason: &str) {
        self.signalling_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A conference was created.
    pub fn conference_created(&self) {
        self.conferences_created.inc();
    }

    /// A conference expired after `duration_seconds`.
    pub fn conference_expired(&self, duration_seconds: f64) {
        self.conferences_completed.inc();
        if duration_seconds.is_finite() && duration_seconds > 0.0 {
            self.conference_seconds.inc_by(duration_seconds);
        }
    }

    /// Operational state gauges.
    pub fn set_state(
        &self,
        healthy: bool,
        drain: bool,
        graceful_shutdown: bool,
        shutting_down: bool,
    ) {
        self.healthy.set(i64::from(healthy));
        self.drain.set(i64::from(drain));
        self.graceful_shutdown.set(i64::from(graceful_shutdown));
        self.shutting_down.set(i64::from(shutting_down));
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]): what `GET /metrics`
    /// returns.
    pub fn encode(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }

    /// The same metrics in the OpenMetrics text format ([`OPENMETRICS_CONTENT_TYPE`]), for a
    /// scraper that asks for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The per-worker counter families, in the order of [`WORKER_COUNTERS`].
    fn worker_counters(&self) -> impl Iterator<Item = WorkerCounter<'_>> {
        [
            &self.packets_received,
            &self.packets_sent,
            &self.received_bytes,
            &self.sent_bytes,
            &self.rtp_packets_received,
            &self.rtcp_packets_received,
            &self.audio_packets_received,
            &self.video_packets_received,
            &self.loop_turns,
            &self.syscalls,
        ]
        .into_iter()
        .zip(WORKER_COUNTERS)
    }
}

/// How far a mirrored counter advances when the bridge's cumulative value goes from `old` to
/// `new`: by the difference, or by `new` if it went back (the bridge restarted).
fn advance(old: u64, new: u64) -> u64 {
    new.checked_sub(old).unwrap_or(new)
}

/// Whether any cumulative counter of `new` is below its value in `prev`: the bridge restarted.
fn went_backwards(prev: &StatsSnapshot, new: &StatsSnapshot) -> bool {
    if new.dtls_succeeded < prev.dtls_succeeded || new.dtls_failed < prev.dtls_failed {
        return true;
    }
    new.workers.iter().any(|w| {
        let Some(before) = prev.workers.iter().find(|b| b.worker == w.worker) else {
            return false;
        };
        if WORKER_COUNTERS.iter().any(|get| get(w) < get(before)) {
            return true;
        }
        let old = drops_by_reason(&before.counters.drops);
        drops_by_reason(&w.counters.drops)
            .into_iter()
            .any(|(reason, n)| old.get(&reason).is_some_and(|&o| n < o))
    })
}

/// Drop counters by reason, read through serde so that reasons the bridge adds appear without
/// a change here.
fn drops_by_reason(drops: &Drops) -> BTreeMap<String, u64> {
    match serde_json::to_value(drops) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter_map(|(reason, v)| v.as_u64().map(|n| (reason, n)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A count as a gauge value, saturating.
fn int<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A label value safe to write unescaped (prometheus-client does not escape label values).
fn label_value(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Rewrites prometheus-client's OpenMetrics text into the Prometheus text format 0.0.4: a
/// counter family is named after its `_total` samples, `info` becomes a `gauge` named
/// `<name>_info`, `unknown` becomes `untyped`, and `# UNIT` and `# EOF` lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, typ) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, typ) = match typ {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some((help_name, text)) = help.take() {
                if help_name == name {
                    out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
                }
            }
            out.push_str(&format!("# TYPE {name}{suffix} {typ}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use viaduct_bridge::command::protocol::Counters;

    // `..Default::default()` keeps this compiling when the bridge adds counters.
    #[allow(clippy::needless_update)]
    fn worker(index: usize, scale: u64) -> WorkerStats {
        WorkerStats {
            worker: index,
            port: 10000 + index as u16,
            io_backend: "uring".into(),
            conferences: 2,
            endpoints: 5,
            connected_endpoints: 4,
            loop_turns: 100 * scale,
            syscalls: 50 * scale,
            counters: Counters {
                packets_in: 10 * scale,
                bytes_in: 1000 * scale,
                packets_out: 20 * scale,
                bytes_out: 2000 * scale,
                rtp_in: 8 * scale,
                rtcp_in: scale,
                audio_in: 3 * scale,
                video_in: 5 * scale,
                drops: Drops {
                    srtp_auth: 3 * scale,
                    queue_full: scale,
                    ..Drops::default()
                },
                ..Counters::default()
            },
        }
    }

    fn sample(scale: u64) -> Sample {
        let workers = vec![worker(0, scale), worker(1, 2 * scale)];
        let mut totals = Counters::default();
        for w in &workers {
            totals.add(&w.counters);
        }
        Sample {
            snapshot: StatsSnapshot {
                io_backend: "uring".into(),
                conferences: 4,
                endpoints: 10,
                totals,
                dtls_succeeded: 7 * scale,
                dtls_failed: scale,
                workers,
                endpoint_stats: Vec::new(),
            },
            incoming_bits_per_second: 1.5e6,
            outgoing_bits_per_second: 3e6,
            incoming_packets_per_second: 150.0,
            outgoing_packets_per_second: 300.0,
            stress: 0.25,
            worker_stress: vec![0.125, 0.375],
            endpoints_sending_audio: 6,
            endpoints_sending_video: 3,
            inactive_endpoints: 1,
            largest_conference: 7,
            incoming_loss: 0.0,
            outgoing_loss: 0.0,
            rtt_seconds: 0.025,
        }
    }

    /// The value of the sample line `series` (name and labels exactly as encoded).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counters_advance_by_delta() {
        let m = Metrics::new("1.2.3");
        m.observe(&sample(1));
        m.observe(&sample(3));
        let t = m.encode();
        // Mirrors the bridge's cumulative values: 1 then 3 (delta 2) gives 3.
        assert_eq!(
            value(&t, r#"viaduct_packets_received_total{worker="0"}"#),
            30.0
        );
        assert_eq!(
            value(&t, r#"viaduct_packets_received_total{worker="1"}"#),
            60.0
        );
        assert_eq!(value(&t, r#"viaduct_sent_bytes_total{worker="0"}"#), 6000.0);
        assert_eq!(
            value(&t, r#"viaduct_rtcp_packets_received_total{worker="1"}"#),
            6.0
        );
        assert_eq!(value(&t, r#"viaduct_loop_turns_total{worker="0"}"#), 300.0);
        assert_eq!(
            value(&t, r#"viaduct_video_packets_received_total{worker="1"}"#),
            30.0
        );
        assert_eq!(
            value(
                &t,
                r#"viaduct_dropped_packets_total{worker="0",reason="srtp_auth"}"#
            ),
            9.0
        );
        assert_eq!(
            value(
                &t,
                r#"viaduct_dropped_packets_total{worker="1",reason="queue_full"}"#
            ),
            6.0
        );
        // Every reason the bridge reports has a series, at 0 when nothing was dropped.
        assert_eq!(
            value(
                &t,
                r#"viaduct_dropped_packets_total{worker="0",reason="unbound_source"}"#
            ),
            0.0
        );
        assert_eq!(
            value(&t, r#"viaduct_dtls_handshakes_total{result="succeeded"}"#),
            21.0
        );
        assert_eq!(
            value(&t, r#"viaduct_dtls_handshakes_total{result="failed"}"#),
            3.0
        );

        // Gauges.
        assert_eq!(value(&t, "viaduct_conferences"), 4.0);
        assert_eq!(value(&t, "viaduct_connected_endpoints"), 8.0);
        assert_eq!(value(&t, r#"viaduct_worker_endpoints{worker="1"}"#), 5.0);
        assert_eq!(value(&t, "viaduct_incoming_bytes_per_second"), 187500.0);
        assert_eq!(value(&t, "viaduct_stress_ratio"), 0.25);
        assert_eq!(
            value(&t, r#"viaduct_worker_stress_ratio{worker="1"}"#),
            0.375
        );
        assert_eq!(value(&t, "viaduct_largest_conference_endpoints"), 7.0);
        assert_eq!(
            value(&t, r#"viaduct_loss_ratio{direction="incoming"}"#),
            0.0
        );
        assert_eq!(value(&t, "viaduct_rtt_seconds"), 0.025);
        assert_eq!(
            value(&t, r#"viaduct_io_backend_info{backend="uring"}"#),
            1.0
        );
        assert_eq!(value(&t, r#"viaduct_build_info{version="1.2.3"}"#), 1.0);
        assert!(
            t.contains("# TYPE viaduct_packets_received_total counter\n"),
            "{t}"
        );
    }

    #[test]
    fn bridge_restart_advances_by_new_value() {
        let m = Metrics::new("x");
        m.observe(&sample(5));
        // The bridge restarted: every counter is back near zero.
        m.observe(&sample(1));
        let t = m.encode();
        assert_eq!(
            value(&t, r#"viaduct_packets_received_total{worker="0"}"#),
            60.0
        );
        assert_eq!(
            value(
                &t,
                r#"viaduct_dropped_packets_total{worker="0",reason="srtp_auth"}"#
            ),
            18.0
        );
        assert_eq!(
            value(&t, r#"viaduct_dtls_handshakes_total{result="succeeded"}"#),
            42.0
        );
        // After the restart, deltas again.
        m.observe(&sample(2));
        let t = m.encode();
        assert_eq!(
            value(&t, r#"viaduct_packets_received_total{worker="0"}"#),
            70.0
        );
    }

    #[test]
    fn restart_detected_even_where_a_counter_grew() {
        let m = Metrics::new("x");
        let mut before = sample(5);
        before.snapshot.workers[0].counters.drops.malformed = 2;
        m.observe(&before);
        // After a restart packets went back, but malformed drops already exceed the old 2:
        // they count from zero, not from 2.
        let mut after = sample(1);
        after.snapshot.workers[0].counters.drops.malformed = 3;
        m.observe(&after);
        let t = m.encode();
        assert_eq!(
            value(
                &t,
                r#"viaduct_dropped_packets_total{worker="0",reason="malformed"}"#
            ),
            5.0
        );
    }

    #[test]
    fn vanished_workers_and_backend_change() {
        let m = Metrics::new("x");
        m.observe(&sample(1));
        let mut s = sample(2);
        s.snapshot.workers.truncate(1);
        s.worker_stress.truncate(1);
        s.snapshot.io_backend = "mmsg".into();
        m.observe(&s);
        let t = m.encode();
        assert!(
            !t.contains(r#"viaduct_worker_endpoints{worker="1"}"#),
            "{t}"
        );
        assert!(
            !t.contains(r#"viaduct_worker_stress_ratio{worker="1"}"#),
            "{t}"
        );
        assert!(!t.contains(r#"backend="uring""#), "{t}");
        assert_eq!(value(&t, r#"viaduct_io_backend_info{backend="mmsg"}"#), 1.0);
    }

    #[test]
    fn events_and_state() {
        let m = Metrics::new("x");
        m.set_link_up(true);
        m.link_reconnected();
        m.observe_handshake(3);
        m.observe_handshake(40);
        m.observe_handshake(20_000);
        m.endpoint_connected();
        m.endpoint_failed("ice-timeout");
        m.endpoint_failed("dtls-alert");
        m.endpoint_failed("closed");
        m.conference_created();
        m.conference_created();
        m.conference_expired(90.5);
        m.set_state(true, false, true, false);
        let t = m.encode();
        assert_eq!(value(&t, "viaduct_bridge_link_up"), 1.0);
        assert_eq!(value(&t, "viaduct_bridge_link_reconnects_total"), 1.0);
        let h = "viaduct_dtls_handshake_duration_seconds";
        assert_eq!(value(&t, &format!("{h}_count")), 3.0);
        assert!((value(&t, &format!("{h}_sum")) - 20.043).abs() < 1e-9);
        assert_eq!(value(&t, &format!("{h}_bucket{{le=\"0.005\"}}")), 1.0);
        assert_eq!(value(&t, &format!("{h}_bucket{{le=\"0.05\"}}")), 2.0);
        assert_eq!(value(&t, &format!("{h}_bucket{{le=\"10.0\"}}")), 2.0);
        assert_eq!(value(&t, &format!("{h}_bucket{{le=\"+Inf\"}}")), 3.0);
        assert_eq!(value(&t, "viaduct_ice_succeeded_total"), 1.0);
        assert_eq!(value(&t, "viaduct_ice_failed_total"), 1.0);
        assert_eq!(value(&t, "viaduct_dtls_failed_total"), 2.0);
        assert_eq!(value(&t, "viaduct_conferences_created_total"), 2.0);
        assert_eq!(value(&t, "viaduct_conferences_completed_total"), 1.0);
        assert_eq!(value(&t, "viaduct_conference_seconds_total"), 90.5);
        assert_eq!(value(&t, "viaduct_healthy"), 1.0);
        assert_eq!(value(&t, "viaduct_drain"), 0.0);
        assert_eq!(value(&t, "viaduct_graceful_shutdown"), 1.0);
        assert_eq!(value(&t, "viaduct_shutting_down"), 0.0);
    }

    #[test]
    fn openmetrics_variant() {
        let m = Metrics::new("x");
        m.observe(&sample(1));
        let t = m.encode_openmetrics();
        assert!(t.ends_with("# EOF\n"));
        assert!(
            t.contains("# TYPE viaduct_packets_received counter\n"),
            "{t}"
        );
        assert!(
            t.contains(r#"viaduct_packets_received_total{worker="0"} 10"#),
            "{t}"
        );
        assert!(!m.encode().contains("# EOF"));
    }

    #[test]
    fn label_values_are_sanitized() {
        let m = Metrics::new("1.0 \"evil\"\\\n");
        assert!(m
            .encode()
            .contains(r#"viaduct_build_info{version="1.0 _evil__ "} 1"#));
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Metrics>();
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let required = std::env::var("VIADUCT_REQUIRE_PROMTOOL").as_deref() == Ok("1");
        let found = std::process::Command::new("promtool")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !required,
                "promtool not found and VIADUCT_REQUIRE_PROMTOOL=1 (apt-get install prometheus)"
            );
            eprintln!("\n!!!!!!!! promtool NOT FOUND: `promtool check metrics` SKIPPED !!!!!!!!\n");
            return;
        }

        let m = Metrics::new("0.1.0");
        m.observe(&sample(1));
        m.observe(&sample(2));
        m.set_link_up(true);
        m.link_reconnected();
        m.observe_handshake(12);
        m.endpoint_connected();
        m.endpoint_failed("ice-timeout");
        m.conference_created();
        m.conference_expired(12.5);
        m.set_state(true, false, false, false);
        let text = m.encode();

        let path = std::env::temp_dir().join(format!(
            "viaduct-metrics-{}-{:?}.prom",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, &text).unwrap();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg("promtool check metrics < \"$1\"")
            .arg("sh")
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            output.status.success(),
            "promtool check metrics failed ({}):\n{}{}\n--- exposition ---\n{text}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        // promtool prints lint problems even when it exits 0 for some of them.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(said.trim().is_empty(), "promtool said:\n{said}");
    }
}
