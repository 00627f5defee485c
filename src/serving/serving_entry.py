"""The file MLflow runs to build the served model ("models from code": no pickle in the registry)."""
import mlflow

from src.serving.pyfunc import ColorizerModel

mlflow.models.set_model(ColorizerModel())
