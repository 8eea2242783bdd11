//! Stage 3: emitters from the IR. Each one is a pure function of the IR.

pub mod avro;
pub mod deploy;
pub mod docs;
pub mod go;
pub mod rust;
pub mod svg;
