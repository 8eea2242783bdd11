package wire

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/pkg/crc64"
)

// Fingerprint is the CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical
// Form, in the byte order single-object encoding puts it on the wire (little-endian).
type Fingerprint [8]byte

// String is the fingerprint as `.avro/index.json` writes it: the wire bytes in hex.
func (f Fingerprint) String() string { return fmt.Sprintf("%x", f[:]) }

// ParseFingerprint reads a fingerprint written by [Fingerprint.String].
func ParseFingerprint(hex string) (Fingerprint, error) {
	var f Fingerprint
	if len(hex) != 16 {
		return f, fmt.Errorf("fingerprint %q: want 16 hex digits", hex)
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return f, fmt.Errorf("fingerprint %q: %w", hex, err)
	}
	binary.BigEndian.PutUint64(f[:], v)
	return f, nil
}

// FingerprintOf computes the fingerprint of schema by the Avro specification.
//
// hamba/avro's own FingerprintUsing(CRC64Avro) hashes a form that keeps
// `logicalType`, which the specification's canonical form drops, so it differs from
// every other implementation for the uuid and timestamp fields these schemas have.
func FingerprintOf(schema avro.Schema) (Fingerprint, error) {
	form, err := CanonicalForm(schema)
	if err != nil {
		return Fingerprint{}, err
	}
	return Fingerprint(crc64.SumWithByteOrder([]byte(form), crc64.LittleEndian)), nil
}

// CanonicalForm is the Parsing Canonical Form of schema: full names, only the
// attributes that define the binary encoding, no whitespace.
func CanonicalForm(schema avro.Schema) (string, error) {
	var b strings.Builder
	if err := writeCanonical(&b, schema, map[string]bool{}); err != nil {
		return "", err
	}
	return b.String(), nil
}

func writeCanonical(b *strings.Builder, s avro.Schema, defined map[string]bool) error {
	// Names and symbols are [A-Za-z0-9_.]: Go's quoting is JSON's for them.
	q := strconv.Quote
	// A named type is written in full where it first appears, then by name.
	named := func(n avro.NamedSchema) bool {
		if defined[n.FullName()] {
			b.WriteString(q(n.FullName()))
			return false
		}
		defined[n.FullName()] = true
		return true
	}
	switch t := s.(type) {
	case *avro.NullSchema:
		b.WriteString(`"null"`)
	case *avro.PrimitiveSchema:
		b.WriteString(q(string(t.Type())))
	case *avro.RefSchema:
		b.WriteString(q(t.Schema().FullName()))
	case *avro.RecordSchema:
		if !named(t) {
			return nil
		}
		b.WriteString(`{"name":` + q(t.FullName()) + `,"type":` + q(string(t.Type())) + `,"fields":[`)
		for i, f := range t.Fields() {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"name":` + q(f.Name()) + `,"type":`)
			if err := writeCanonical(b, f.Type(), defined); err != nil {
				return err
			}
			b.WriteByte('}')
		}
		b.WriteString("]}")
	case *avro.EnumSchema:
		if !named(t) {
			return nil
		}
		b.WriteString(`{"name":` + q(t.FullName()) + `,"type":"enum","symbols":[`)
		for i, symbol := range t.Symbols() {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(q(symbol))
		}
		b.WriteString("]}")
	case *avro.FixedSchema:
		if !named(t) {
			return nil
		}
		b.WriteString(`{"name":` + q(t.FullName()) + `,"type":"fixed","size":` + strconv.Itoa(t.Size()) + `}`)
	case *avro.ArraySchema:
		b.WriteString(`{"type":"array","items":`)
		if err := writeCanonical(b, t.Items(), defined); err != nil {
			return err
		}
		b.WriteByte('}')
	case *avro.MapSchema:
		b.WriteString(`{"type":"map","values":`)
		if err := writeCanonical(b, t.Values(), defined); err != nil {
			return err
		}
		b.WriteByte('}')
	case *avro.UnionSchema:
		b.WriteByte('[')
		for i, u := range t.Types() {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeCanonical(b, u, defined); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	default:
		// Every kind of schema hamba parses is above; a new one must be added, not skipped.
		return fmt.Errorf("wire: no canonical form for schema type %q", s.Type())
	}
	return nil
}
