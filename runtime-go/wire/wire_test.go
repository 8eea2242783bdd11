package wire

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"
)

// The schema history this repository publishes, read as committed.
const history = "../../.avro"

type indexed struct {
	Event       string `json:"event"`
	File        string `json:"file"`
	Fingerprint string `json:"fingerprint"`
	Version     int    `json:"version"`
	Written     bool   `json:"written"`
}

func committed(t *testing.T) []Schema {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(history, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index struct{ Schemas []indexed }
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	var out []Schema
	for _, s := range index.Schemas {
		text, err := os.ReadFile(filepath.Join(history, s.File))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Schema{Event: s.Event, Version: s.Version, Fingerprint: s.Fingerprint, JSON: string(text), Written: s.Written})
	}
	if len(out) < 12 {
		t.Fatalf("only %d schemas in the history", len(out))
	}
	return out
}

// The fingerprints the Rust generator wrote into the index are the ones computed here,
// from the schema files alone, for every published version.
func TestEveryCommittedFingerprintIsTheOneComputedHere(t *testing.T) {
	for _, s := range committed(t) {
		parsed, err := avro.ParseWithCache(s.JSON, "", &avro.SchemaCache{})
		if err != nil {
			t.Fatalf("%s v%d: %v", s.Event, s.Version, err)
		}
		print, err := FingerprintOf(parsed)
		if err != nil {
			t.Fatal(err)
		}
		if print.String() != s.Fingerprint {
			t.Errorf("%s v%d: computed %s, index says %s", s.Event, s.Version, print, s.Fingerprint)
		}
	}
	if _, err := NewRegistry(committed(t)); err != nil {
		t.Fatal(err)
	}
}

// The canonical form drops what does not change the encoding (docs, defaults, logical
// types, unknown attributes) and writes a named type in full once.
func TestTheCanonicalFormKeepsOnlyWhatDefinesTheEncoding(t *testing.T) {
	schema := avro.MustParse(`{"type":"record","name":"R","namespace":"n","doc":"d","x-extra":1,"fields":[
		{"name":"id","type":{"type":"string","logicalType":"uuid"},"doc":"f"},
		{"name":"at","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null},
		{"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"]}},
		{"name":"again","type":{"type":"array","items":"E"}}]}`)
	form, err := CanonicalForm(schema)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"n.R","type":"record","fields":[{"name":"id","type":"string"},{"name":"at","type":["null","long"]},` +
		`{"name":"e","type":{"name":"n.E","type":"enum","symbols":["a","b"]}},{"name":"again","type":{"type":"array","items":"n.E"}}]}`
	if form != want {
		t.Fatalf("canonical form\n got %s\nwant %s", form, want)
	}
}

const v1 = `{"type":"record","name":"Thing","namespace":"t","fields":[
	{"name":"id","type":{"type":"string","logicalType":"uuid"}},
	{"name":"gone","type":"string"}]}`

const v2 = `{"type":"record","name":"Thing","namespace":"t","fields":[
	{"name":"id","type":{"type":"string","logicalType":"uuid"}},
	{"name":"at","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null},
	{"name":"count","type":"int","default":7}]}`

type thingV1 struct {
	ID   uuid.UUID `avro:"id"`
	Gone string    `avro:"gone"`
}

type thing struct {
	ID    uuid.UUID  `avro:"id"`
	At    *time.Time `avro:"at"`
	Count int32      `avro:"count"`
}

func registry(t *testing.T, written int) *Registry {
	t.Helper()
	var schemas []Schema
	for i, text := range []string{v1, v2} {
		parsed := avro.MustParse(text)
		print, err := FingerprintOf(parsed)
		if err != nil {
			t.Fatal(err)
		}
		schemas = append(schemas, Schema{Event: "thing", Version: i + 1, Fingerprint: print.String(), JSON: text, Written: i+1 == written})
	}
	r, err := NewRegistry(schemas)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAnOlderVersionDecodesIntoTheWrittenOneByResolution(t *testing.T) {
	old := registry(t, 1)
	id := uuid.New()
	data, err := old.Encode("thing", thingV1{ID: id, Gone: "skipped"})
	if err != nil {
		t.Fatal(err)
	}
	current := registry(t, 2)
	if event, version, err := current.Writer(data); err != nil || event != "thing" || version != 1 {
		t.Fatalf("writer: %s v%d, %v", event, version, err)
	}
	var got thing
	if err := current.Decode(data, "thing", &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != id || got.At != nil || got.Count != 7 {
		t.Fatalf("resolved to %+v", got)
	}
	// The same again comes from the cached resolution.
	var again thing
	if err := current.Decode(data, "thing", &again); err != nil || again != got {
		t.Fatalf("second decode: %+v, %v", again, err)
	}
}

func TestTheWrittenVersionRoundTrips(t *testing.T) {
	r := registry(t, 2)
	at := time.UnixMicro(1_700_000_000_123_456).UTC()
	in := thing{ID: uuid.New(), At: &at, Count: -3}
	data, err := r.Encode("thing", in)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != 0xC3 || data[1] != 0x01 {
		t.Fatalf("header %x", data[:2])
	}
	var out thing
	if err := r.Decode(data, "thing", &out); err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || !out.At.Equal(at) || out.Count != in.Count {
		t.Fatalf("round trip: %+v", out)
	}
}

func TestBadBytesAreErrorsNotPanics(t *testing.T) {
	r := registry(t, 2)
	var out thing
	if err := r.Decode([]byte{0xC3}, "thing", &out); !errors.Is(err, ErrNotSingleObject) {
		t.Fatalf("short: %v", err)
	}
	var unknown *UnknownSchemaError
	if err := r.Decode([]byte{0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0}, "thing", &out); !errors.As(err, &unknown) {
		t.Fatalf("unknown fingerprint: %v", err)
	}
	good, err := r.Encode("thing", thing{ID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Decode(good[:len(good)-3], "thing", &out); err == nil {
		t.Fatal("a truncated datum decoded")
	}
	if err := r.Decode(good, "other", &out); err == nil {
		t.Fatal("a message of one event decoded as another")
	}
}

func FuzzDecodeNeverPanics(f *testing.F) {
	r, err := NewRegistry([]Schema{{Event: "thing", Version: 1, JSON: v2, Written: true, Fingerprint: mustPrint(v2)}})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := r.Encode("thing", thing{ID: uuid.New()})
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		var out thing
		_ = r.Decode(data, "thing", &out)
	})
}

func mustPrint(text string) string {
	print, err := FingerprintOf(avro.MustParse(text))
	if err != nil {
		panic(err)
	}
	return print.String()
}

func TestAFingerprintThatIsNotTheComputedOneIsRefused(t *testing.T) {
	_, err := NewRegistry([]Schema{{Event: "thing", Version: 1, JSON: v2, Written: true, Fingerprint: "0000000000000000"}})
	if err == nil {
		t.Fatal("a wrong declared fingerprint was accepted")
	}
}

func TestHeadersNameTheEventAndCarryItsTraceAndDeadline(t *testing.T) {
	id := uuid.Nil
	bare := Headers("order.created", id, nil, nil, nil)
	if len(bare) != 3 || bare["event-type"] != "order.created" || bare["event-id"] != id.String() || bare["content-type"] != ContentType {
		t.Fatalf("bare: %v", bare)
	}
	tp, ts := "00-abc-def-01", "k=v"
	deadline := time.Unix(0, 1_700_000_000_123_456_000)
	full := Headers("order.created", id, &tp, &ts, &deadline)
	// The deadline as the Rust side writes it (RFC 3339, microseconds, Z).
	if full["traceparent"] != tp || full["tracestate"] != ts || full["saga-deadline"] != "2023-11-14T22:13:20.123456Z" {
		t.Fatalf("full: %v", full)
	}
}

// A schema learned from the schema topic: a newer version of a known event decodes by
// resolution; a record of an unknown event marks its messages as of a later event; a
// schema registered under another fingerprint is refused.
func TestALearnedSchemaDecodesOrMarksALaterEvent(t *testing.T) {
	newer := registry(t, 2)
	id := uuid.New()
	data, err := newer.Encode("thing", thing{ID: id, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	// A build that knows only an earlier version, without `count`.
	v0 := `{"type":"record","name":"Thing","namespace":"t","fields":[
	{"name":"id","type":{"type":"string","logicalType":"uuid"}},
	{"name":"at","type":["null",{"type":"long","logicalType":"timestamp-micros"}],"default":null}]}`
	old, err := NewRegistry([]Schema{{Event: "thing", Version: 1, JSON: v0, Written: true, Fingerprint: mustPrint(v0)}})
	if err != nil {
		t.Fatal(err)
	}
	type thingV0 struct {
		ID uuid.UUID  `avro:"id"`
		At *time.Time `avro:"at"`
	}
	var unknown *UnknownSchemaError
	if err := old.Decode(data, "thing", &thingV0{}); !errors.As(err, &unknown) {
		t.Fatalf("before learning: %v", err)
	}
	print, _ := ParseFingerprint(mustPrint(v2))
	if _, _, err := old.Learn(Fingerprint{1}, v2); err == nil {
		t.Fatal("a schema under a fingerprint not its own was learned")
	}
	if event, fresh, err := old.Learn(print, v2); err != nil || event != "thing" || !fresh {
		t.Fatalf("learning: %q, %v", event, err)
	}
	var got thingV0
	if err := old.Decode(data, "thing", &got); err != nil || got.ID != id || !old.Knows(print) {
		t.Fatalf("after learning: %+v, %v", got, err)
	}
	other := `{"type":"record","name":"Other","namespace":"t","fields":[]}`
	otherPrint, _ := ParseFingerprint(mustPrint(other))
	if event, fresh, err := old.Learn(otherPrint, other); err != nil || event != "" || !fresh {
		t.Fatalf("learning a later event: %q, %v", event, err)
	}
	later := append(append([]byte{0xC3, 0x01}, otherPrint[:]...), 0)
	if _, _, err := old.Writer(later); !errors.Is(err, ErrLaterEvent) {
		t.Fatalf("a later event: %v", err)
	}
	// The schema topic is read from its start by every process: what is known already,
	// including what this build writes, is not learned again.
	for _, again := range []struct{ print, json, event string }{
		{print.String(), v2, "thing"}, {otherPrint.String(), other, ""}, {mustPrint(v0), v0, "thing"},
	} {
		p, _ := ParseFingerprint(again.print)
		if event, fresh, err := old.Learn(p, again.json); err != nil || event != again.event || fresh {
			t.Fatalf("learning %s again: %q, fresh %v, %v", again.print, event, fresh, err)
		}
	}
}
