"""target-usmart: Singer streams as CSV files and revisions of uSmart datasets."""
