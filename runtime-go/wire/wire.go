// Package wire is the Go side of the saga's wire format, the counterpart of the Rust
// `saga-wire` crate: Avro single-object encoding (two marker bytes, the writer schema's
// fingerprint, the Avro binary datum) of one record per event, where every published
// version of an event's schema decodes into the version this build writes, by Avro's
// schema resolution.
//
// The generated package of a saga hands its schemas to [NewRegistry]; a participant
// never names a schema itself.
package wire

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hamba/avro/v2"
)

// Marker is the two bytes that open every single-object encoded message.
var Marker = [2]byte{0xC3, 0x01}

// HeaderLen is the length of the marker and the fingerprint before the datum.
const HeaderLen = 10

// ErrNotSingleObject: the bytes do not start with a single-object header.
var ErrNotSingleObject = errors.New("not an Avro single-object message")

// UnknownSchemaError: the message's writer schema is none this build knows. A newer
// producer may have written it (an event or a version published after this build).
type UnknownSchemaError struct{ Fingerprint Fingerprint }

func (e *UnknownSchemaError) Error() string {
	return fmt.Sprintf("no known schema has fingerprint %s", e.Fingerprint)
}

// ErrLaterEvent: the message is an event this build does not know, of a later version of
// the saga (its schema was learned from the schema topic): a consumer skips it.
var ErrLaterEvent = errors.New("an event of a later version of the saga")

// Schema is one published version of one event's schema, as the generator embeds it.
type Schema struct {
	Event   string
	Version int
	// As `.avro/index.json` writes it; checked against the JSON when the registry is built.
	Fingerprint string
	JSON        string
	// The version this build writes; exactly one per event.
	Written bool
}

type version struct {
	event  string
	number int
	print  Fingerprint
	schema avro.Schema
}

// Registry encodes events with the version this build writes and decodes any published
// version. It is safe for concurrent use.
type Registry struct {
	api    avro.API
	compat *avro.SchemaCompatibility
	// The events by the full name of their record, for what is learned.
	byName  map[string]string
	written map[string]*version

	mu      sync.RWMutex
	byPrint map[Fingerprint]*version
	// Learned schemas of events this build does not know, by full name.
	later map[Fingerprint]string

	resolved sync.Map // [2]Fingerprint{reader, writer} -> avro.Schema
}

// NewRegistry parses every schema and checks that its fingerprint, computed here, is the
// one the generator declared: the two implementations of the canonical form agree.
func NewRegistry(schemas []Schema) (*Registry, error) {
	r := &Registry{
		// Arrays as a plain count of items, as the Rust producers write them, so the same
		// event encodes to the same bytes in either language.
		api:     avro.Config{DisableBlockSizeHeader: true}.Freeze(),
		compat:  avro.NewSchemaCompatibility(),
		byPrint: make(map[Fingerprint]*version, len(schemas)),
		written: make(map[string]*version),
		byName:  make(map[string]string),
		later:   make(map[Fingerprint]string),
	}
	for _, s := range schemas {
		// One cache per schema: the versions of an event define the same names differently.
		parsed, err := avro.ParseWithCache(s.JSON, "", &avro.SchemaCache{})
		if err != nil {
			return nil, fmt.Errorf("%s v%d: %w", s.Event, s.Version, err)
		}
		print, err := FingerprintOf(parsed)
		if err != nil {
			return nil, fmt.Errorf("%s v%d: %w", s.Event, s.Version, err)
		}
		if print.String() != s.Fingerprint {
			return nil, fmt.Errorf("%s v%d: fingerprint is %s here, %s where it was generated", s.Event, s.Version, print, s.Fingerprint)
		}
		v := &version{event: s.Event, number: s.Version, print: print, schema: parsed}
		r.byPrint[print] = v
		if s.Written {
			if _, twice := r.written[s.Event]; twice {
				return nil, fmt.Errorf("%s: two versions are marked written", s.Event)
			}
			r.written[s.Event] = v
		}
	}
	for _, v := range r.byPrint {
		if _, ok := r.written[v.event]; !ok {
			return nil, fmt.Errorf("%s: no version is marked written", v.event)
		}
		if named, ok := v.schema.(avro.NamedSchema); ok {
			r.byName[named.FullName()] = v.event
		}
	}
	return r, nil
}

// Learn takes a writer schema read from the saga's schema topic, registered there under
// print: checked first (print must be the schema's own fingerprint). A record of an
// event this build knows becomes a version of that event, which then decodes by
// resolution; a record of any other name marks its messages as of a later event
// ([ErrLaterEvent]). Returns the event, or "" for a later one, and whether print is new
// here (a schema known already, as every one this build writes is, changes nothing).
func (r *Registry) Learn(print Fingerprint, json string) (event string, fresh bool, err error) {
	r.mu.RLock()
	known, isKnown := r.byPrint[print]
	_, isLater := r.later[print]
	r.mu.RUnlock()
	if isKnown {
		return known.event, false, nil
	}
	if isLater {
		return "", false, nil
	}
	parsed, err := avro.ParseWithCache(json, "", &avro.SchemaCache{})
	if err != nil {
		return "", false, fmt.Errorf("learning %s: %w", print, err)
	}
	own, err := FingerprintOf(parsed)
	if err != nil {
		return "", false, err
	}
	if own != print {
		return "", false, fmt.Errorf("learning %s: the schema's own fingerprint is %s", print, own)
	}
	named, ok := parsed.(avro.NamedSchema)
	if !ok {
		return "", false, fmt.Errorf("learning %s: not a record", print)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	event, ofThisSaga := r.byName[named.FullName()]
	if !ofThisSaga {
		_, seen := r.later[print]
		r.later[print] = named.FullName()
		return "", !seen, nil
	}
	if _, seen := r.byPrint[print]; seen {
		return event, false, nil
	}
	r.byPrint[print] = &version{event: event, number: 0, print: print, schema: parsed}
	return event, true, nil
}

// Knows says whether messages written with print decode here (or are known to be of a
// later event).
func (r *Registry) Knows(print Fingerprint) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, known := r.byPrint[print]
	_, later := r.later[print]
	return known || later
}

// Encode writes value, a record of event's written version, single-object encoded.
func (r *Registry) Encode(event string, value any) ([]byte, error) {
	v, ok := r.written[event]
	if !ok {
		return nil, fmt.Errorf("encoding %s: no such event", event)
	}
	datum, err := r.api.Marshal(v.schema, value)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", event, err)
	}
	out := make([]byte, 0, HeaderLen+len(datum))
	out = append(out, Marker[:]...)
	out = append(out, v.print[:]...)
	return append(out, datum...), nil
}

// Writer names the event and the version that wrote data, from its header alone.
func (r *Registry) Writer(data []byte) (event string, version int, err error) {
	v, err := r.writer(data)
	if err != nil {
		return "", 0, err
	}
	return v.event, v.number, nil
}

func (r *Registry) writer(data []byte) (*version, error) {
	print, err := FingerprintOfMessage(data)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	v, ok := r.byPrint[print]
	_, later := r.later[print]
	r.mu.RUnlock()
	switch {
	case ok:
		return v, nil
	case later:
		return nil, ErrLaterEvent
	default:
		return nil, &UnknownSchemaError{Fingerprint: print}
	}
}

// FingerprintOfMessage is the writer schema's fingerprint in data's header.
func FingerprintOfMessage(data []byte) (Fingerprint, error) {
	var print Fingerprint
	if len(data) < HeaderLen || data[0] != Marker[0] || data[1] != Marker[1] {
		return print, ErrNotSingleObject
	}
	copy(print[:], data[2:HeaderLen])
	return print, nil
}

// Decode reads data, written with any published version of event, into value, a record
// of event's written version: fields the writer lacks take their defaults, fields only
// the writer has are skipped.
func (r *Registry) Decode(data []byte, event string, value any) error {
	w, err := r.writer(data)
	if err != nil {
		return err
	}
	if w.event != event {
		return fmt.Errorf("decoding %s: the message is %s", event, w.event)
	}
	reader := r.written[event]
	schema := reader.schema
	if w.print != reader.print {
		if schema, err = r.resolve(reader, w); err != nil {
			return err
		}
	}
	if err := r.api.Unmarshal(schema, data[HeaderLen:], value); err != nil {
		return fmt.Errorf("decoding %s v%d: %w", event, w.number, err)
	}
	return nil
}

// Built is a registry built on first use, as a generated package keeps it
// (`sync.OnceValues(func() (*Registry, error) {...})`).
type Built func() (*Registry, error)

// Encode is [Registry.Encode] with the registry b builds.
func (b Built) Encode(event string, value any) ([]byte, error) {
	r, err := b()
	if err != nil {
		return nil, err
	}
	return r.Encode(event, value)
}

// Learn is [Registry.Learn] with the registry b builds.
func (b Built) Learn(print Fingerprint, json string) (event string, fresh bool, err error) {
	r, err := b()
	if err != nil {
		return "", false, err
	}
	return r.Learn(print, json)
}

// Writer is [Registry.Writer] with the registry b builds.
func (b Built) Writer(data []byte) (event string, version int, err error) {
	r, err := b()
	if err != nil {
		return "", 0, err
	}
	return r.Writer(data)
}

// DecodeAs is [Registry.Decode] into a new T, with the registry b builds.
func DecodeAs[T any](b Built, data []byte, event string) (*T, error) {
	r, err := b()
	if err != nil {
		return nil, err
	}
	var value T
	if err := r.Decode(data, event, &value); err != nil {
		return nil, err
	}
	return &value, nil
}

// resolve is the schema that reads writer's data as reader's, built once per pair.
func (r *Registry) resolve(reader, writer *version) (avro.Schema, error) {
	key := [2]Fingerprint{reader.print, writer.print}
	if s, ok := r.resolved.Load(key); ok {
		return s.(avro.Schema), nil
	}
	s, err := r.compat.Resolve(reader.schema, writer.schema)
	if err != nil {
		return nil, fmt.Errorf("%s v%d cannot be read as v%d: %w", writer.event, writer.number, reader.number, err)
	}
	r.resolved.Store(key, s)
	return s, nil
}
