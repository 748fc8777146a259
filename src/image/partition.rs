//! GPT and MBR partition tables (written by a helper).
