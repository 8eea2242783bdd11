package service

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is a participant's settings: each from its environment variable, or its flag
// (`--listen-addr`), with the Rust services' defaults and meanings (docs/runtime.md).
type Config struct {
	Listen               string
	DatabaseURL          string
	DatabaseMaxConns     int
	StatementTimeoutMs   int
	LockTimeoutMs        int
	IdleInTxTimeoutMs    int
	KafkaBrokers         string
	KafkaUsername        string
	KafkaPassword        string
	TopicPrefix          string
	ConsumerWorkers      int
	GroupInstanceID      string
	groupInstanceIDSet   bool
	HealthStuckAfterMs   int
	HealthDatabaseFailMs int
	HealthWedgedAfterMs  int
	ShutdownGraceSecs    int
	MetricsListen        string
	TLSClientCA          string
	TLSCert              string
	TLSKey               string
	AllowedCallers       string
	AllowPlaintext       bool
}

// setting is one setting: its variable, flag, default, help, and whether its value is a
// secret that `--help` must not show.
type setting struct {
	env, flag, def, help string
	secret               bool
	set                  func(string) error
}

func (c *Config) settings(service string, listen, database string) []setting {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	num := func(p *int) func(string) error {
		return func(v string) error {
			n, err := strconv.Atoi(v)
			*p = n
			return err
		}
	}
	return []setting{
		{"LISTEN_ADDR", "listen-addr", listen, "gRPC address (health); port 0 takes a free one", false, str(&c.Listen)},
		{"DATABASE_URL", "database-url", database, "PostgreSQL URL of the service's own database", true, str(&c.DatabaseURL)},
		{"DATABASE_MAX_CONNECTIONS", "database-max-connections", "10", "connections of the work pool", false, num(&c.DatabaseMaxConns)},
		{"DATABASE_STATEMENT_TIMEOUT_MS", "database-statement-timeout-ms", "30000", "statement_timeout of every connection", false, num(&c.StatementTimeoutMs)},
		{"DATABASE_LOCK_TIMEOUT_MS", "database-lock-timeout-ms", "10000", "lock_timeout of every connection", false, num(&c.LockTimeoutMs)},
		{"DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "database-idle-in-transaction-timeout-ms", "120000", "idle_in_transaction_session_timeout of every connection", false, num(&c.IdleInTxTimeoutMs)},
		{"KAFKA_BROKERS", "kafka-brokers", "127.0.0.1:17092", "Kafka brokers, comma-separated", false, str(&c.KafkaBrokers)},
		{"KAFKA_SASL_USERNAME", "kafka-sasl-username", "", "SASL/SCRAM-SHA-512 principal (both or neither with the password)", false, str(&c.KafkaUsername)},
		{"KAFKA_SASL_PASSWORD", "kafka-sasl-password", "", "SASL/SCRAM-SHA-512 password", true, str(&c.KafkaPassword)},
		{"TOPIC_PREFIX", "topic-prefix", "", "prepended to every topic and consumer group", false, str(&c.TopicPrefix)},
		{"CONSUMER_WORKERS", "consumer-workers", "3", "workers the consumer deals its partitions to (1..=64)", false, num(&c.ConsumerWorkers)},
		{"KAFKA_GROUP_INSTANCE_ID", "kafka-group-instance-id", "", "static member id (default <service>-<hostname>-<port>; empty: dynamic membership)", false,
			func(v string) error { c.GroupInstanceID, c.groupInstanceIDSet = v, true; return nil }},
		{"HEALTH_STUCK_AFTER_MS", "health-stuck-after-ms", "60000", "how long a loop may fail before the pipeline is not serving", false, num(&c.HealthStuckAfterMs)},
		{"HEALTH_DATABASE_FAIL_AFTER_MS", "health-database-fail-after-ms", "5000", "how long the database may fail before the instance is not ready", false, num(&c.HealthDatabaseFailMs)},
		{"HEALTH_WEDGED_AFTER_MS", "health-wedged-after-ms", "600000", "how long an attempt may be in flight before liveness fails", false, num(&c.HealthWedgedAfterMs)},
		{"SHUTDOWN_GRACE_SECS", "shutdown-grace-secs", "10", "after a stop signal, exit 1 if still stopping after this", false, num(&c.ShutdownGraceSecs)},
		{"METRICS_LISTEN", "metrics-listen", "", "Prometheus address (default: the gRPC port + 100)", false, str(&c.MetricsListen)},
		{"GRPC_TLS_CLIENT_CA", "grpc-tls-client-ca", "", "CA of the callers' certificates (mutual TLS; with the two below)", false, str(&c.TLSClientCA)},
		{"GRPC_TLS_CERT", "grpc-tls-cert", "", "this service's certificate", false, str(&c.TLSCert)},
		{"GRPC_TLS_KEY", "grpc-tls-key", "", "this service's key", false, str(&c.TLSKey)},
		{"GRPC_ALLOWED_CALLERS", "grpc-allowed-callers", "gateway", "certificate names that may call the API (health: any of the CA)", false, str(&c.AllowedCallers)},
		{"GRPC_ALLOW_PLAINTEXT", "grpc-allow-plaintext", "false", "serve plaintext gRPC on a non-loopback address", false,
			func(v string) error { b, err := strconv.ParseBool(v); c.AllowPlaintext = b; return err }},
	}
}

// Parse reads the settings of service from args (flags) over the environment over the
// defaults; `--help` prints them (never a secret's value) and exits 0.
func Parse(service, about, listen, database string, args []string, env func(string) (string, bool), out io.Writer) (*Config, error) {
	c := &Config{}
	settings := c.settings(service, listen, database)
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.SetOutput(out)
	values := map[string]*string{}
	for _, s := range settings {
		values[s.flag] = fs.String(s.flag, "", s.help)
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "%s\n\nUsage: %s [--<setting> <value>]...\n\nEvery setting is also read from its environment variable:\n\n", about, service)
		for _, s := range settings {
			def := s.def
			if s.secret && def != "" {
				def = "(hidden)"
			}
			fmt.Fprintf(out, "  --%s, %s\n      %s", s.flag, s.env, s.help)
			if def != "" {
				fmt.Fprintf(out, " [default: %s]", def)
			}
			fmt.Fprintln(out)
		}
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	for _, s := range settings {
		value, given := s.def, false
		if v, ok := env(s.env); ok {
			value, given = v, true
		}
		if v := *values[s.flag]; v != "" {
			value, given = v, true
		}
		if s.env == "KAFKA_GROUP_INSTANCE_ID" && !given {
			continue
		}
		if err := s.set(value); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", s.env, value, err)
		}
	}
	if (c.KafkaUsername == "") != (c.KafkaPassword == "") {
		return nil, fmt.Errorf("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD: set both or neither")
	}
	if c.ConsumerWorkers < 1 || c.ConsumerWorkers > 64 {
		return nil, fmt.Errorf("CONSUMER_WORKERS: %d is not in 1..=64", c.ConsumerWorkers)
	}
	tls := []string{c.TLSClientCA, c.TLSCert, c.TLSKey}
	if n := len(strings.Join(tls, "")); n > 0 && (tls[0] == "" || tls[1] == "" || tls[2] == "") {
		return nil, fmt.Errorf("GRPC_TLS_CLIENT_CA, GRPC_TLS_CERT and GRPC_TLS_KEY: set all three or none")
	}
	return c, nil
}

// Environ looks a variable up in the process's environment.
func Environ(name string) (string, bool) { return os.LookupEnv(name) }

// instanceID is the static member id: the one set, or the service, the host and the port,
// which tell the instances of a service apart and stay the same when one restarts.
func (c *Config) instanceID(service string, port int) string {
	if c.groupInstanceIDSet {
		return c.GroupInstanceID
	}
	host, _ := os.ReadFile("/proc/sys/kernel/hostname")
	name := strings.TrimSpace(string(host))
	if name == "" {
		name = "localhost"
	}
	return fmt.Sprintf("%s-%s-%d", service, name, port)
}

// metricsAddress is where the metrics are served: as set, or the gRPC port + 100.
func (c *Config) metricsAddress(grpc *net.TCPAddr) string {
	if c.MetricsListen != "" {
		return c.MetricsListen
	}
	return net.JoinHostPort(grpc.IP.String(), strconv.Itoa(grpc.Port+100))
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }
