package zone
