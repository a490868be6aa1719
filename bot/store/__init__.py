"""The app's durable state; the only package that speaks SQL."""
