package service

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

func TestSettingsComeFromFlagsOverTheEnvironmentOverTheDefaults(t *testing.T) {
	c, err := Parse("shipping", "about", "127.0.0.1:1", "postgres://a:b@h/d",
		[]string{"--consumer-workers", "5"}, env(map[string]string{"CONSUMER_WORKERS": "2", "TOPIC_PREFIX": "t."}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ConsumerWorkers != 5 || c.TopicPrefix != "t." || c.Listen != "127.0.0.1:1" || c.ShutdownGraceSecs != 10 || c.groupInstanceIDSet {
		t.Fatalf("%+v", c)
	}
	c, err = Parse("shipping", "about", "x", "y", nil, env(map[string]string{"KAFKA_GROUP_INSTANCE_ID": ""}), &bytes.Buffer{})
	if err != nil || !c.groupInstanceIDSet || c.instanceID("shipping", 1) != "" {
		t.Fatalf("an empty instance id means dynamic membership: %+v, %v", c, err)
	}
}

func TestBadSettingsAreRefusedWithTheirName(t *testing.T) {
	for _, vars := range []map[string]string{
		{"CONSUMER_WORKERS": "0"},
		{"CONSUMER_WORKERS": "many"},
		{"KAFKA_SASL_USERNAME": "shipping"},
		{"GRPC_TLS_CERT": "cert.pem"},
	} {
		_, err := Parse("shipping", "about", "x", "y", nil, env(vars), &bytes.Buffer{})
		for name := range vars {
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%v: %v", vars, err)
			}
		}
	}
}

func TestHelpShowsNoSecret(t *testing.T) {
	var out bytes.Buffer
	_, err := Parse("shipping", "about", "x", "postgres://a:db-s3cret@h/d", []string{"--help"},
		env(map[string]string{"KAFKA_SASL_PASSWORD": "kafka-s3cret"}), &out)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "Usage") || strings.Contains(out.String(), "s3cret") {
		t.Fatalf("%v\n%s", err, out.String())
	}
}

func TestAURLIsSaidWithoutItsPassword(t *testing.T) {
	if got := redactedURL("postgres://saga:db-s3cret@127.0.0.1:1/saga"); got != "postgres://saga:***@127.0.0.1:1/saga" {
		t.Fatal(got)
	}
	c := &Config{DatabaseURL: "postgres://saga:db-s3cret@h/d", KafkaPassword: "k-s3cret"}
	if got := redact("failed: db-s3cret and k-s3cret", c); strings.Contains(got, "s3cret") {
		t.Fatal(got)
	}
}
