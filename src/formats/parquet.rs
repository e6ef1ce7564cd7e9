//! Parquet tables of rows and their embeddings, written with arrow-rs (the
//! `parquet` crate's `ArrowWriter`): scalar columns, then one column of
//! fixed-size lists of float32 (Arrow `FixedSizeList<Float32>[D]`), which
//! pyarrow reads as `fixed_size_list<item: float>[D]` and pandas as one
//! NumPy float32 array per row. Uncompressed (float features hardly
//! compress), written atomically.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

/// One scalar column; `None` is a null.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Utf8(Vec<Option<String>>),
    Float64(Vec<Option<f64>>),
    Int64(Vec<Option<i64>>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Utf8(v) => v.len(),
            Column::Float64(v) => v.len(),
            Column::Int64(v) => v.len(),
        }
    }

    fn array(&self) -> (DataType, ArrayRef) {
        match self {
            Column::Utf8(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
            Column::Float64(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::Int64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
        }
    }
}

/// Writes `columns` and, last, the column `embedding` of `values`
/// (row-major [rows, dim], float32) to `path`.
///
/// Errors: a column whose length is not `values.len() / dim`, a name used
/// twice, and any write failure (naming the file).
pub fn write_table(
    path: &Path,
    columns: &[(String, Column)],
    embedding: &str,
    values: &[f32],
    dim: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        dim > 0 && values.len() % dim == 0,
        "{}: {} values are not rows of {dim}",
        path.display(),
        values.len()
    );
    let rows = values.len() / dim;
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (name, column) in columns {
        anyhow::ensure!(
            column.len() == rows,
            "{}: column {name} has {} values for {rows} rows",
            path.display(),
            column.len()
        );
        anyhow::ensure!(
            name != embedding && !fields.iter().any(|f: &Field| f.name() == name),
            "{}: two columns named {name}",
            path.display()
        );
        let (kind, array) = column.array();
        fields.push(Field::new(name, kind, true));
        arrays.push(array);
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let width = i32::try_from(dim).context("embedding too wide")?;
    let list = FixedSizeListArray::try_new(
        item.clone(),
        width,
        Arc::new(Float32Array::from(values.to_vec())),
        None,
    )?;
    fields.push(Field::new(
        embedding,
        DataType::FixedSizeList(item, width),
        false,
    ));
    arrays.push(Arc::new(list));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .with_context(|| format!("{}: cannot assemble the table", path.display()))?;
    super::atomic_write::write_atomically(path, |w| {
        let mut writer = ArrowWriter::try_new(w, schema, None)?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    })
    .with_context(|| format!("{}: cannot write Parquet", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn rows_and_embeddings_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.parquet");
        let columns = vec![
            (
                "path".to_string(),
                Column::Utf8(vec![Some("a.jpg".into()), Some("b.jpg".into())]),
            ),
            ("lat".to_string(), Column::Float64(vec![Some(1.5), None])),
            (
                "geo_cluster".to_string(),
                Column::Int64(vec![Some(3), Some(0)]),
            ),
        ];
        write_table(
            &p,
            &columns,
            "embedding",
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            3,
        )
        .unwrap();
        let file = std::fs::File::open(&p).unwrap();
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let batch = reader.next().unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let lat = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!((lat.value(0), lat.is_null(1)), (1.5, true));
        let emb = batch
            .column(3)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let second = emb.value(1);
        let second = second.as_any().downcast_ref::<Float32Array>().unwrap();
        assert_eq!(second.values().to_vec(), vec![4.0, 5.0, 6.0]);
    }

    #[test]
    fn mismatched_and_duplicate_columns_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.parquet");
        let short = vec![("path".to_string(), Column::Utf8(vec![Some("a".into())]))];
        let e = write_table(&p, &short, "embedding", &[0.0; 4], 2).unwrap_err();
        assert!(
            e.to_string()
                .contains("column path has 1 values for 2 rows"),
            "{e}"
        );
        let clash = vec![("embedding".to_string(), Column::Int64(vec![Some(1)]))];
        let e = write_table(&p, &clash, "embedding", &[0.0; 2], 2).unwrap_err();
        assert!(e.to_string().contains("two columns named embedding"), "{e}");
        assert!(!p.exists());
    }
}
