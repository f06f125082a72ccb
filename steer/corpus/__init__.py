"""Text for the model to read: documents from files and datasets, cut into token windows."""
