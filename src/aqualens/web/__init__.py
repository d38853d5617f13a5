"""Server-rendered HTML pages; they call the same functions as their REST twins."""
