"""Repository configuration: `.github/box.yml` parsed, validated, merged and loaded."""
