// Package service is the chassis of a Go participant, the counterpart of the Rust
// runtime's `service::run`: settings, logs, the gRPC health service over mutual TLS,
// metrics, the database and its migrations, the topics' check, the schema registration,
// the outbox relay and the consumer, and a stop that finishes what is in hand.
package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"sagaplatform/runtime-go/consumer"
	"sagaplatform/runtime-go/db"
	"sagaplatform/runtime-go/health"
	"sagaplatform/runtime-go/kafka"
	"sagaplatform/runtime-go/metrics"
	"sagaplatform/runtime-go/outbox"
	"sagaplatform/runtime-go/participant"
	"sagaplatform/runtime-go/schematopic"
	"sagaplatform/runtime-go/telemetry"
)

// Service is what a participant's main hands the chassis.
type Service struct {
	Binding participant.Binding
	// About is the first line of `--help`.
	About string
	// Listen and Database are the defaults of LISTEN_ADDR and DATABASE_URL.
	Listen, Database string
	// Migrations is the runtime's, then the service's own.
	Runtime, Migrations []db.Migration
}

// Main runs the service until a stop signal and exits: 0 after a clean stop, 1 when the
// stop outlasts its grace or something failed, 2 for bad settings.
func Main(s Service) {
	config, err := Parse(s.Binding.Service, s.About, s.Listen, s.Database, os.Args[1:], Environ, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(jsonLogs(os.Stderr, s.Binding.Service)))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		// The grace is timed apart from everything else a stop does.
		time.Sleep(time.Duration(config.ShutdownGraceSecs) * time.Second)
		slog.Error("the stop outlasted its grace; exiting", "grace_secs", config.ShutdownGraceSecs)
		os.Exit(1)
	}()
	if err := Run(ctx, s, config); err != nil {
		slog.Error("service failed", "error", redact(err.Error(), config))
		os.Exit(1)
	}
	slog.Info("service stopped")
}

// jsonLogs writes JSON lines to w with the field names the Rust services' logs use
// (`timestamp`, `level`, `message`), so one log pipeline reads both.
func jsonLogs(w io.Writer, service string) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 {
			return a
		}
		switch a.Key {
		case slog.TimeKey:
			a.Key = "timestamp"
		case slog.MessageKey:
			a.Key = "message"
		case slog.LevelKey:
			a.Value = slog.StringValue(strings.ToUpper(a.Value.String()))
		}
		return a
	}}).WithAttrs([]slog.Attr{slog.String("service", service)})
}

// redact removes the database's and the broker's passwords from text.
func redact(text string, c *Config) string {
	if u, err := url.Parse(c.DatabaseURL); err == nil && u.User != nil {
		if password, ok := u.User.Password(); ok && password != "" {
			text = strings.ReplaceAll(text, password, "****")
		}
	}
	if c.KafkaPassword != "" {
		text = strings.ReplaceAll(text, c.KafkaPassword, "****")
	}
	return text
}

// redactedURL is url with its password as `***`, to say where a connection went.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return "(an unreadable URL)"
	}
	if _, has := u.User.Password(); has {
		// A marker url would escape; replaced once the URL is written.
		u.User = url.UserPassword(u.User.Username(), "REDACTED")
		return strings.Replace(u.String(), ":REDACTED@", ":***@", 1)
	}
	return u.String()
}

// Run serves until ctx ends, then stops in order: the gRPC server, the consumer (its
// workers finish the message in hand; marked offsets are committed), the relay (its
// batch in flight), the pools.
func Run(ctx context.Context, s Service, c *Config) error {
	b := s.Binding
	// Bound first and said at once: the stack and the tests wait for this line.
	listener, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	address := listener.Addr().(*net.TCPAddr)
	if c.TLSCert == "" && !address.IP.IsLoopback() && !c.AllowPlaintext {
		return fmt.Errorf("refusing plaintext gRPC on %s: set GRPC_TLS_CERT, GRPC_TLS_KEY and GRPC_TLS_CLIENT_CA (or GRPC_ALLOW_PLAINTEXT=true)", address)
	}
	slog.Info("gRPC server listening", "listen", address.String())
	m := metrics.New()
	metricsListener, err := net.Listen("tcp", c.metricsAddress(address))
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	go func() { _ = m.Serve(metricsListener) }()
	defer metricsListener.Close()

	tracer, err := telemetry.Init(ctx, b.Service)
	if err != nil {
		return fmt.Errorf("traces: %w", err)
	}
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tracer.Shutdown(flush)
	}()
	h := health.New(ms(c.HealthStuckAfterMs), ms(c.HealthDatabaseFailMs), ms(c.HealthWedgedAfterMs))
	pool, err := connect(ctx, s, c)
	if err != nil {
		return err
	}
	defer pool.Close()
	slog.Info("database ready")

	k := kafka.Config{Brokers: kafka.ParseBrokers(c.KafkaBrokers), Username: c.KafkaUsername, Password: c.KafkaPassword, TopicPrefix: c.TopicPrefix}
	producer, err := kgo.NewClient(append(k.Options(), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0),
		// Batches no bigger than a consumer's fetch of a partition (see kafka.RecordBatchBytes).
		kgo.ProducerBatchMaxBytes(kafka.RecordBatchBytes),
		kgo.RecordDeliveryTimeout(30*time.Second))...)
	if err != nil {
		return err
	}
	defer producer.Close()
	if err := checkTopics(ctx, producer, k, b); err != nil {
		return err
	}
	if err := schematopic.Register(ctx, producer, k.Topic(b.SchemaTopic), b.Writes); err != nil {
		return fmt.Errorf("registering the writer schemas on %s: %w", k.Topic(b.SchemaTopic), err)
	}
	reader := &schematopic.Reader{Kafka: k, Topic: k.Topic(b.SchemaTopic), Learn: b.Learn}
	defer reader.Close()

	server, err := grpcServer(c)
	if err != nil {
		return err
	}
	statuses := grpchealth.NewServer()
	healthpb.RegisterHealthServer(server, statuses)
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	go checkDatabase(work, pool, h.Probe(health.API))
	go report(work, h, statuses, m)
	go outboxBacklog(work, pool, m)
	go m.SamplePool(work, pool, metrics.WorkPool)
	go sampleLag(work, producer, k, b, m, h.Probe(health.Broker))
	relay := &outbox.Relay{Pool: pool, Producer: producer, Kafka: k, Probe: h.Probe(health.Relay), Metrics: m,
		Published: func(topic string, createdAt time.Time) {
			m.Published.WithLabelValues(topic).Inc()
			m.PublishLatency.Observe(time.Since(createdAt).Seconds())
		}}
	relayDone := make(chan struct{})
	go func() { relay.Run(work); close(relayDone) }()
	consumerDone := make(chan error, 1)
	go func() {
		consumerDone <- consumer.Run(work, consumer.Config{Kafka: k, Binding: b, Pool: pool, Relay: relay, Health: h,
			Schemas: reader, Metrics: m, Tracer: tracer, Workers: c.ConsumerWorkers, InstanceID: c.instanceID(b.Service, address.Port)})
	}()

	var failed error
	select {
	case <-ctx.Done():
		slog.Info("stopping")
	case err := <-served:
		failed = fmt.Errorf("the gRPC server stopped: %w", err)
	case err := <-consumerDone:
		failed = fmt.Errorf("the consumer stopped: %v", err)
		consumerDone <- nil
	}
	statuses.Shutdown()
	server.GracefulStop()
	stopWork()
	if err := <-consumerDone; err != nil && failed == nil {
		failed = err
	}
	<-relayDone
	return failed
}

// connect opens the work pool, waiting up to 30 s for the database, and migrates it on a
// connection of its own with no timeouts.
func connect(ctx context.Context, s Service, c *Config) (*pgxpool.Pool, error) {
	poolConfig, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %s", redact(err.Error(), c))
	}
	poolConfig.MaxConns = int32(c.DatabaseMaxConns)
	params := poolConfig.ConnConfig.RuntimeParams
	params["statement_timeout"] = fmt.Sprint(c.StatementTimeoutMs)
	params["lock_timeout"] = fmt.Sprint(c.LockTimeoutMs)
	params["idle_in_transaction_session_timeout"] = fmt.Sprint(c.IdleInTxTimeoutMs)
	params["application_name"] = s.Binding.Service
	deadline := time.Now().Add(30 * time.Second)
	var migrateConn *pgx.Conn
	for {
		config := poolConfig.ConnConfig.Copy()
		for _, p := range []string{"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"} {
			config.RuntimeParams[p] = "0"
		}
		migrateConn, err = pgx.ConnectConfig(ctx, config)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("cannot connect to PostgreSQL at %s: %s", redactedURL(c.DatabaseURL), redact(err.Error(), c))
		}
		time.Sleep(250 * time.Millisecond)
	}
	err = db.Migrate(ctx, migrateConn, s.Runtime, s.Migrations)
	migrateConn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return pgxpool.NewWithConfig(ctx, poolConfig)
}

// checkTopics waits up to 30 s for every topic the service reads or writes to exist with
// the spec's partitions; a wrong count stops the service (a saga's events would land on
// different partition numbers in different topics).
func checkTopics(ctx context.Context, client *kgo.Client, k kafka.Config, b participant.Binding) error {
	want := map[string]int32{k.Topic(b.SchemaTopic): 1}
	for _, t := range b.Group.Topics {
		want[k.Topic(t)] = -1
	}
	admin := kadm.NewClient(client)
	deadline := time.Now().Add(30 * time.Second)
	for {
		names := make([]string, 0, len(want))
		for t := range want {
			names = append(names, t)
		}
		details, err := admin.ListTopics(ctx, names...)
		missing := ""
		if err == nil {
			for name, partitions := range want {
				d, ok := details[name]
				switch {
				case !ok || d.Err != nil || len(d.Partitions) == 0:
					missing = name
				case partitions > 0 && int32(len(d.Partitions)) != partitions:
					return fmt.Errorf("Kafka topic %s has %d partitions but the spec says %d", name, len(d.Partitions), partitions)
				}
			}
			if missing == "" {
				slog.Info("Kafka topics are there")
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Kafka topics not there within 30 s (%s): %v", missing, err)
		}
		slog.Info("waiting for Kafka to check the topics", "waiting_for", missing)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// grpcServer serves over mutual TLS when its certificates are set: health to any caller
// the CA certified, anything else only to the allowed callers.
func grpcServer(c *Config) (*grpc.Server, error) {
	if c.TLSCert == "" {
		return grpc.NewServer(), nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("GRPC_TLS_CERT/GRPC_TLS_KEY: %w", err)
	}
	ca, err := os.ReadFile(c.TLSClientCA)
	if err != nil {
		return nil, fmt.Errorf("GRPC_TLS_CLIENT_CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("GRPC_TLS_CLIENT_CA: no certificate in %s", c.TLSClientCA)
	}
	allowed := map[string]bool{}
	for _, name := range strings.Split(c.AllowedCallers, ",") {
		if name = strings.TrimSpace(name); name != "" {
			allowed[name] = true
		}
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	check := func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return nil
		}
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				for _, name := range info.State.PeerCertificates[0].DNSNames {
					if allowed[name] {
						return nil
					}
				}
			}
		}
		return status.Error(codes.PermissionDenied, "refused: this caller may not call this service's API")
	}
	return grpc.NewServer(grpc.Creds(creds),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		})), nil
}

// checkDatabase asks the database every second, on a connection of its own pool's, for
// readiness.
func checkDatabase(ctx context.Context, pool *pgxpool.Pool, probe *health.Probe) {
	for ctx.Err() == nil {
		pingCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := pool.Ping(pingCtx)
		cancel()
		if err != nil && ctx.Err() == nil {
			probe.Failing(err)
		} else {
			probe.Working()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// report keeps the gRPC health service and the gauges in step with the probes, every
// second, logging each change once.
func report(ctx context.Context, h *health.Health, statuses *grpchealth.Server, m *metrics.Metrics) {
	last := map[string]bool{}
	for ctx.Err() == nil {
		a := h.Assess(time.Now())
		for name, serving := range a.Statuses() {
			if was, ok := last[name]; ok && was == serving {
				continue
			}
			state := healthpb.HealthCheckResponse_NOT_SERVING
			if serving {
				state = healthpb.HealthCheckResponse_SERVING
			}
			statuses.SetServingStatus(name, state)
			if name != "" {
				value := 0.0
				if serving {
					value = 1
				}
				m.HealthServing.WithLabelValues(name).Set(value)
				if _, seen := last[name]; seen || !serving {
					slog.Info("health changed", "check", name, "serving", serving, "problems", fmt.Sprint(a.Problems), "restart_for", fmt.Sprint(a.RestartFor))
				}
			}
			last[name] = serving
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// outboxBacklog samples the rows not published yet every 5 s.
func outboxBacklog(ctx context.Context, pool *pgxpool.Pool, m *metrics.Metrics) {
	for ctx.Err() == nil {
		var rows int64
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE published_at IS NULL AND failed_at IS NULL").Scan(&rows); err == nil {
			m.OutboxBacklog.Set(float64(rows))
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// sampleLag sets the consumer lag of the service's group every 5 s: per topic, the
// messages after its committed offsets. It is also how the service learns that the broker
// answers (the `saga.broker` probe).
func sampleLag(ctx context.Context, client *kgo.Client, k kafka.Config, b participant.Binding, m *metrics.Metrics, probe *health.Probe) {
	admin := kadm.NewClient(client)
	group := k.Topic(b.Group.GroupID)
	topics := make([]string, 0, len(b.Group.Topics))
	for _, t := range b.Group.Topics {
		topics = append(topics, k.Topic(t))
	}
	for ctx.Err() == nil {
		lagCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ends, err := admin.ListEndOffsets(lagCtx, topics...)
		var committed kadm.OffsetResponses
		if err == nil {
			committed, err = admin.FetchOffsets(lagCtx, group)
		}
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			probe.Failing(fmt.Errorf("Kafka does not answer for the group's offsets: %w", err))
		case err == nil:
			probe.Working()
			lag := map[string]int64{}
			ends.Each(func(end kadm.ListedOffset) {
				at := int64(0)
				if o, ok := committed.Lookup(end.Topic, end.Partition); ok && o.Err == nil && o.At >= 0 {
					at = o.At
				}
				lag[end.Topic] += max(end.Offset-at, 0)
			})
			for topic, n := range lag {
				m.ConsumerLag.WithLabelValues(k.Logical(topic), b.Group.GroupID).Set(float64(n))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}
