// Package metrics is the Prometheus metrics of a Go participant, under the names and
// labels the Rust services use (`process/src/metrics.rs`, docs/operations.md), so one
// dashboard and one set of alerts serve either.
package metrics

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var seconds = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}

// Metrics is one process's metrics.
type Metrics struct {
	Registry        *prometheus.Registry
	Handled         *prometheus.CounterVec
	Retried         *prometheus.CounterVec
	DeadLettered    *prometheus.CounterVec
	HandlerDuration *prometheus.HistogramVec
	OutboxBacklog   prometheus.Gauge
	PublishLatency  prometheus.Histogram
	Published       *prometheus.CounterVec
	HealthServing   *prometheus.GaugeVec
	DBConnections   *prometheus.GaugeVec
	DBWaiting       *prometheus.GaugeVec
	DBAcquire       *prometheus.HistogramVec
	ConsumerLag     *prometheus.GaugeVec
}

// New registers every metric in a registry of its own, with Go's process metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Handled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saga_messages_handled_total",
			Help: "Messages that reached a final outcome other than a dead letter, by topic and group"}, []string{"topic", "group"}),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saga_messages_retried_total",
			Help: "Retries of a message in place, by topic, group and failure class"}, []string{"topic", "group", "class"}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saga_messages_dead_lettered_total",
			Help: "Messages written to a dead-letter topic, by topic, group and reason"}, []string{"topic", "group", "reason"}),
		HandlerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "saga_handler_duration_seconds",
			Help: "Time of one handler transaction, by group", Buckets: seconds}, []string{"group"}),
		OutboxBacklog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "saga_outbox_backlog_rows",
			Help: "Outbox rows not published yet"}),
		PublishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "saga_outbox_publish_latency_seconds",
			Help: "From an outbox row's insert to its acknowledgement by the broker", Buckets: seconds}),
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "saga_outbox_published_total",
			Help: "Outbox rows published, by topic"}, []string{"topic"}),
		HealthServing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "saga_health_serving",
			Help: "1 while a health check serves, 0 while it does not, by check"}, []string{"check"}),
		DBConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "saga_db_pool_connections",
			Help: "Connections of a database pool, by pool and state (idle, in_use)"}, []string{"pool", "state"}),
		DBWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "saga_db_pool_waiting_tasks",
			Help: "Tasks waiting for a connection of a pool, by pool"}, []string{"pool"}),
		DBAcquire: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "saga_db_pool_acquire_seconds",
			Help: "Time to get a connection of a pool, by pool", Buckets: seconds}, []string{"pool"}),
		ConsumerLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "saga_consumer_lag_messages",
			Help: "Messages of a topic not yet committed by the service's group, by topic and group"}, []string{"topic", "group"}),
	}
	m.Registry.MustRegister(m.Handled, m.Retried, m.DeadLettered, m.HandlerDuration, m.OutboxBacklog,
		m.PublishLatency, m.Published, m.HealthServing, m.DBConnections, m.DBWaiting, m.DBAcquire, m.ConsumerLag,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Serve answers every path of listener with the metrics, until the listener closes.
func (m *Metrics) Serve(listener net.Listener) error {
	handler := promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	return (&http.Server{Handler: handler}).Serve(listener)
}

// WorkPool is the pool the saga's work (handlers, relay) takes its connections from.
const WorkPool = "work"

// Acquire takes a connection of pool (labelled name), counting the wait.
func (m *Metrics) Acquire(ctx context.Context, pool *pgxpool.Pool, name string) (*pgxpool.Conn, error) {
	waiting := m.DBWaiting.WithLabelValues(name)
	waiting.Inc()
	start := time.Now()
	conn, err := pool.Acquire(ctx)
	waiting.Dec()
	m.DBAcquire.WithLabelValues(name).Observe(time.Since(start).Seconds())
	return conn, err
}

// SamplePool sets the connection gauges of pool every 5 s until ctx ends.
func (m *Metrics) SamplePool(ctx context.Context, pool *pgxpool.Pool, name string) {
	m.DBWaiting.WithLabelValues(name).Add(0)
	for ctx.Err() == nil {
		stat := pool.Stat()
		m.DBConnections.WithLabelValues(name, "idle").Set(float64(stat.IdleConns()))
		m.DBConnections.WithLabelValues(name, "in_use").Set(float64(stat.AcquiredConns()))
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}
