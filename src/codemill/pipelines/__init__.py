"""Apache Beam pipelines for each stage."""
