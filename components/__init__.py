"""Layout building blocks shared by pages (pure functions and AIO components)."""
